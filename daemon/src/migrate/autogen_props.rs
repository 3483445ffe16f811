//! Property test for autogenerate: random sequences of schema edits on a populated database.
//! After each generated upgrade the catalog equals the declared schema; after its downgrade it
//! equals the previous one; rows survive both ways.

use rusqlite::Connection;

use super::autogen::{self, Plan};
use super::catalog::{self, Catalog};
use super::script::Revision;
use super::sqlsplit::Statement;
use super::store::{self, LedgerOp};

/// xorshift64*: deterministic, so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Debug)]
struct Col {
    name: String,
    ty: &'static str,
    not_null: bool,
    default: Option<&'static str>,
    references: Option<String>,
}

#[derive(Clone, Debug)]
struct Tbl {
    name: String,
    cols: Vec<Col>,
    indexes: Vec<String>, // indexed column names
}

const TYPES: [&str; 5] = ["INTEGER", "TEXT", "VARCHAR(50)", "VARCHAR(100)", "BOOLEAN"];

fn render(tables: &[Tbl]) -> String {
    let mut s = String::new();
    for t in tables {
        s.push_str(&format!(
            "CREATE TABLE {} (\n\tid INTEGER NOT NULL, \n",
            t.name
        ));
        for c in &t.cols {
            s.push_str(&format!("\t{} {}", c.name, c.ty));
            if let Some(d) = c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s.push_str(", \n");
        }
        s.push_str("\tPRIMARY KEY (id)");
        for c in t.cols.iter().filter(|c| c.references.is_some()) {
            s.push_str(&format!(
                ", \n\tFOREIGN KEY({}) REFERENCES {} (id)",
                c.name,
                c.references.as_ref().unwrap()
            ));
        }
        s.push_str("\n);\n");
        for i in &t.indexes {
            s.push_str(&format!(
                "CREATE INDEX ix_{}_{i} ON {} ({i});\n",
                t.name, t.name
            ));
        }
    }
    s
}

fn catalog_of(sql: &str) -> Catalog {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(sql).unwrap();
    catalog::read(&c).unwrap()
}

fn edit(rng: &mut Rng, tables: &mut Vec<Tbl>, counter: &mut usize) -> String {
    *counter += 1;
    let n = *counter;
    let referenced = |tables: &[Tbl], name: &str| {
        tables
            .iter()
            .any(|t| t.cols.iter().any(|c| c.references.as_deref() == Some(name)))
    };
    match rng.below(8) {
        0 => {
            tables.push(Tbl {
                name: format!("t{n}"),
                cols: vec![],
                indexes: vec![],
            });
            "add table".into()
        }
        1 if tables.len() > 1 => {
            let i = rng.below(tables.len());
            if referenced(tables, &tables[i].name.clone()) {
                return "skip".into();
            }
            tables.remove(i);
            "drop table".into()
        }
        2 if !tables.is_empty() => {
            let t = rng.below(tables.len());
            let not_null = rng.below(2) == 0;
            let ty = TYPES[rng.below(TYPES.len())];
            let default = if not_null || rng.below(2) == 0 {
                Some(if ty == "INTEGER" || ty == "BOOLEAN" {
                    "1"
                } else {
                    "'x'"
                })
            } else {
                None
            };
            tables[t].cols.push(Col {
                name: format!("c{n}"),
                ty,
                not_null,
                default,
                references: None,
            });
            "add column".into()
        }
        3 => {
            let Some(t) = pick_table_with_cols(rng, tables) else {
                return "skip".into();
            };
            let c = rng.below(tables[t].cols.len());
            let name = tables[t].cols[c].name.clone();
            tables[t].indexes.retain(|i| *i != name);
            tables[t].cols.remove(c);
            "drop column".into()
        }
        4 => {
            let Some(t) = pick_table_with_cols(rng, tables) else {
                return "skip".into();
            };
            let c = tables[t].cols[rng.below(tables[t].cols.len())].name.clone();
            if tables[t].indexes.contains(&c) {
                tables[t].indexes.retain(|i| *i != c);
                "drop index".into()
            } else {
                tables[t].indexes.push(c);
                "add index".into()
            }
        }
        5 if tables.len() > 1 => {
            let t = rng.below(tables.len());
            let target = tables[(t + 1 + rng.below(tables.len() - 1)) % tables.len()]
                .name
                .clone();
            tables[t].cols.push(Col {
                name: format!("r{n}"),
                ty: "INTEGER",
                not_null: false,
                default: None,
                references: Some(target),
            });
            "add foreign key".into()
        }
        6 => {
            let Some(t) = pick_table_with_cols(rng, tables) else {
                return "skip".into();
            };
            let c = rng.below(tables[t].cols.len());
            if tables[t].cols[c].references.is_some() {
                return "skip".into();
            }
            tables[t].cols[c].ty = TYPES[rng.below(TYPES.len())];
            "change type".into()
        }
        7 => {
            let Some(t) = pick_table_with_cols(rng, tables) else {
                return "skip".into();
            };
            let c = rng.below(tables[t].cols.len());
            let col = &mut tables[t].cols[c];
            if col.references.is_some() || col.default.is_none() {
                return "skip".into();
            }
            col.not_null = !col.not_null;
            "toggle nullability".into()
        }
        _ => "skip".into(),
    }
}

fn pick_table_with_cols(rng: &mut Rng, tables: &[Tbl]) -> Option<usize> {
    let with: Vec<usize> = (0..tables.len())
        .filter(|&i| !tables[i].cols.is_empty())
        .collect();
    (!with.is_empty()).then(|| with[rng.below(with.len())])
}

fn apply(conn: &mut Connection, stmts: &[String]) {
    let statements: Vec<Statement> = stmts
        .iter()
        .filter(|s| !s.starts_with("--"))
        .map(|s| Statement {
            sql: s.clone(),
            line: 0,
        })
        .collect();
    let rev = Revision {
        id: "000000000000".into(),
        parents: vec![],
        message: "prop".into(),
        create_date: String::new(),
        doc: vec![],
        path: "prop".into(),
        upgrade: vec![],
        downgrade: vec![],
        checksum: String::new(),
    };
    store::apply_step(
        conn,
        std::path::Path::new(":memory:"),
        &store::Step::upgrade(&rev, "prop"),
        &statements,
        &[],
        &LedgerOp::Forget(String::new()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", stmts.join(";\n")));
}

fn rows(conn: &Connection, cat: &Catalog) -> Vec<(String, i64)> {
    cat.tables
        .keys()
        .map(|t| {
            (
                t.clone(),
                conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                    .unwrap(),
            )
        })
        .collect()
}

/// Inserts a row with every column filled (foreign keys left NULL) into every table.
fn populate(conn: &Connection, tables: &[Tbl]) {
    for t in tables {
        let cols: Vec<&Col> = t.cols.iter().filter(|c| c.references.is_none()).collect();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let values: Vec<&str> = cols
            .iter()
            .map(|c| {
                if c.ty == "INTEGER" || c.ty == "BOOLEAN" {
                    "7"
                } else {
                    "'v'"
                }
            })
            .collect();
        let sql = if names.is_empty() {
            format!("INSERT INTO {} DEFAULT VALUES", t.name)
        } else {
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.name,
                names.join(", "),
                values.join(", ")
            )
        };
        conn.execute_batch(&sql).unwrap();
    }
}

fn same(a: &Catalog, b: &Catalog) -> bool {
    autogen::plan(a, b)
        .map(|p: Plan| p.detected.is_empty())
        .unwrap_or(false)
}

#[test]
fn random_edit_sequences_round_trip_on_populated_databases() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
        let mut tables = vec![Tbl {
            name: "t0".into(),
            cols: vec![],
            indexes: vec![],
        }];
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&render(&tables)).unwrap();
        let mut counter = 0;
        for step in 0..25 {
            populate(&conn, &tables);
            let before_cat = catalog::read(&conn).unwrap();
            let before_rows = rows(&conn, &before_cat);
            let mut next = tables.clone();
            let what = edit(&mut rng, &mut next, &mut counter);
            let target = catalog_of(&render(&next));
            let plan = autogen::plan(&before_cat, &target)
                .unwrap_or_else(|e| panic!("seed {seed} step {step} {what}: {e}"));
            let ctx = || {
                format!(
                    "seed {seed} step {step} ({what})\n{}\n--- plan\n{plan:#?}",
                    render(&next)
                )
            };
            apply(&mut conn, &plan.upgrade);
            let after = catalog::read(&conn).unwrap();
            assert!(
                same(&after, &target),
                "upgrade missed the target: {}",
                ctx()
            );
            let kept: Vec<_> = before_rows
                .iter()
                .filter(|(t, _)| target.tables.contains_key(t))
                .cloned()
                .collect();
            assert_eq!(
                rows(&conn, &catalog::read(&conn).unwrap())
                    .into_iter()
                    .filter(|(t, _)| before_cat.tables.contains_key(t))
                    .collect::<Vec<_>>(),
                kept,
                "rows lost: {}",
                ctx()
            );
            apply(&mut conn, &plan.downgrade);
            assert!(
                same(&catalog::read(&conn).unwrap(), &before_cat),
                "downgrade did not return: {}",
                ctx()
            );
            // A dropped table's rows are gone by design (the file says so); the others survive.
            let back: Vec<_> = rows(&conn, &before_cat)
                .into_iter()
                .filter(|(t, _)| target.tables.contains_key(t))
                .collect();
            assert_eq!(back, kept, "downgrade lost rows: {}", ctx());
            apply(&mut conn, &plan.upgrade);
            tables = next;
        }
    }
}
