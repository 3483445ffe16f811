//! A database's schema as SQLite itself reports it (`pragma table_xinfo`, `index_list`,
//! `index_xinfo`, `foreign_key_list`), so comparisons never depend on how a statement was spelled.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::store::{LEDGER_TABLE, VERSION_TABLE};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    pub tables: BTreeMap<String, Table>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// The CREATE TABLE statement as stored.
    pub sql: String,
    pub columns: Vec<Column>,
    /// Indexes made by CREATE INDEX (origin "c"), by name.
    pub indexes: BTreeMap<String, Index>,
    /// UNIQUE and PRIMARY KEY constraints, as sorted column lists.
    pub unique: Vec<Vec<String>>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Triggers on the table: (name, sql).
    pub triggers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// Position in the primary key (0 = not part of it).
    pub pk: i64,
    /// 0 normal, 2/3 generated.
    pub hidden: i64,
}

impl Column {
    /// The type as compared: case and spacing do not matter.
    pub fn type_key(&self) -> String {
        self.decl_type
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    pub partial: bool,
    pub columns: Vec<String>,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub from: Vec<String>,
    pub table: String,
    pub to: Vec<String>,
    pub on_update: String,
    pub on_delete: String,
}

impl ForeignKey {
    pub fn describe(&self) -> String {
        format!("({})({})", self.from.join(", "), self.to.join(", "))
    }
}

/// Tables of the migration machinery, never part of the declared schema.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("sqlite_") || name == VERSION_TABLE || name == LEDGER_TABLE
}

pub fn read(conn: &Connection) -> rusqlite::Result<Catalog> {
    let mut stmt =
        conn.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let tables: Vec<(String, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut catalog = Catalog::default();
    for (name, sql) in tables.into_iter().filter(|(n, _)| !is_internal(n)) {
        let table = read_table(conn, &name, sql)?;
        catalog.tables.insert(name, table);
    }
    Ok(catalog)
}

fn read_table(conn: &Connection, name: &str, sql: String) -> rusqlite::Result<Table> {
    let mut columns = Vec::new();
    let mut stmt = conn.prepare("SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")?;
    let rows = stmt.query_map([name], |r| {
        Ok(Column {
            name: r.get(0)?,
            decl_type: r.get(1)?,
            not_null: r.get::<_, i64>(2)? != 0,
            default: r.get(3)?,
            pk: r.get(4)?,
            hidden: r.get(5)?,
        })
    })?;
    for c in rows {
        columns.push(c?);
    }

    let mut indexes = BTreeMap::new();
    let mut unique = Vec::new();
    let mut stmt =
        conn.prepare("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1)")?;
    let list: Vec<(String, bool, String, bool)> = stmt
        .query_map([name], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? != 0,
                r.get(2)?,
                r.get::<_, i64>(3)? != 0,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (iname, is_unique, origin, partial) in list {
        let mut cols_stmt =
            conn.prepare("SELECT coalesce(name, '<expr>') FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno")?;
        let cols: Vec<String> = cols_stmt
            .query_map([&iname], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if origin == "c" {
            let isql: String = conn.query_row(
                "SELECT coalesce(sql, '') FROM sqlite_master WHERE type = 'index' AND name = ?1",
                [&iname],
                |r| r.get(0),
            )?;
            indexes.insert(
                iname.clone(),
                Index {
                    name: iname,
                    unique: is_unique,
                    partial,
                    columns: cols,
                    sql: isql,
                },
            );
        } else {
            let mut sorted = cols;
            sorted.sort();
            unique.push(sorted);
        }
    }
    unique.sort();

    let mut fks: BTreeMap<i64, ForeignKey> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT id, \"table\", \"from\", coalesce(\"to\", ''), on_update, on_delete FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
    )?;
    let rows = stmt.query_map([name], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (id, table, from, to, on_update, on_delete) = row?;
        let fk = fks.entry(id).or_insert_with(|| ForeignKey {
            from: vec![],
            table,
            to: vec![],
            on_update,
            on_delete,
        });
        fk.from.push(from);
        fk.to.push(to);
    }
    let mut foreign_keys: Vec<ForeignKey> = fks.into_values().collect();
    foreign_keys.sort();

    let mut stmt = conn.prepare("SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 ORDER BY name")?;
    let triggers = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;

    Ok(Table {
        name: name.to_owned(),
        sql,
        columns,
        indexes,
        unique,
        foreign_keys,
        triggers,
    })
}

/// The text of each column definition in a CREATE TABLE statement, by column name, so an
/// added column is written exactly as the developer declared it.
pub fn column_definitions(create_sql: &str) -> Vec<(String, String)> {
    let Some(open) = create_sql.find('(') else {
        return vec![];
    };
    let body = &create_sql[open + 1..];
    let mut parts = Vec::new();
    let (mut depth, mut start, mut quote): (i32, usize, Option<char>) = (0, 0, None);
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => {
                parts.push(&body[start..i]);
                break;
            }
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    const CONSTRAINTS: [&str; 5] = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let first = p
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            !CONSTRAINTS
                .iter()
                .any(|k| first == *k || first.starts_with(&format!("{k}(")))
        })
        .map(|p| (leading_identifier(p), p.to_string()))
        .collect()
}

/// The first identifier of a definition, unquoted (`"odd, name" TEXT` -> `odd, name`).
fn leading_identifier(def: &str) -> String {
    let close = match def.chars().next() {
        Some('"') => '"',
        Some('`') => '`',
        Some('[') => ']',
        _ => return def.split_whitespace().next().unwrap_or("").to_string(),
    };
    let rest = &def[1..];
    let end = rest.find(close).unwrap_or(rest.len());
    rest[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_definitions_keep_the_text() {
        let sql = "CREATE TABLE prompts (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(255) NOT NULL, \n\tcreated_at DATETIME DEFAULT (CURRENT_TIMESTAMP), \n\tpriority INTEGER NOT NULL DEFAULT 1, \n\t\"odd, name\" TEXT DEFAULT 'a,b', \n\tPRIMARY KEY (id), \n\tFOREIGN KEY(x) REFERENCES y (id)\n)";
        let defs = column_definitions(sql);
        let names: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id", "name", "created_at", "priority", "odd, name"]);
        assert_eq!(defs[2].1, "created_at DATETIME DEFAULT (CURRENT_TIMESTAMP)");
        assert_eq!(defs[4].1, "\"odd, name\" TEXT DEFAULT 'a,b'");
    }

    #[test]
    fn reads_columns_indexes_and_keys() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE p (id INTEGER NOT NULL, code TEXT UNIQUE, PRIMARY KEY (id));
             CREATE TABLE j (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p (id) ON DELETE CASCADE, v VARCHAR(5) DEFAULT 'x');
             CREATE INDEX ix_j_v ON j (v);",
        )
        .unwrap();
        let c = read(&conn).unwrap();
        let j = &c.tables["j"];
        assert_eq!(j.columns[2].default.as_deref(), Some("'x'"));
        assert_eq!(j.columns[2].type_key(), "VARCHAR(5)");
        assert_eq!(j.indexes["ix_j_v"].columns, ["v"]);
        assert_eq!(j.foreign_keys[0].on_delete, "CASCADE");
        assert_eq!(c.tables["p"].unique, vec![vec!["code".to_string()]]);
    }
}
