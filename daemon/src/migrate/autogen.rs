//! `migrate create` and `check`: the difference between the head of the revision graph and the
//! declared schema (`schema.sql`), and the SQL that turns one into the other and back.
//!
//! What SQLite can do in place is done in place (`ADD COLUMN`, `DROP COLUMN`, indexes,
//! triggers). Everything else is a table rebuild that keeps the declared statement text:
//! rename the old table away (legacy mode, so other tables' foreign keys keep naming the table),
//! create the new one, copy the common columns, drop the old one, recreate indexes and triggers.
//! The engine runs each revision with foreign-key enforcement off and checks
//! `foreign_key_check` before committing, so no other table's rows are touched.

use std::collections::BTreeSet;

use super::catalog::{column_definitions, Catalog, Column, Table};

/// A revision's worth of changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// One line per difference, as alembic's autogenerate logs them.
    pub detected: Vec<String>,
    /// Changes that lose data or may fail on existing rows.
    pub warnings: Vec<String>,
    /// Statements (without `;`) or `-- ` comment lines.
    pub upgrade: Vec<String>,
    pub downgrade: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AutogenError {
    #[error("column '{table}.{column}' is NOT NULL with no default: SQLite cannot add it to a table that already has rows. Give it a default in schema.sql (for example: {column} INTEGER NOT NULL DEFAULT 1), or make it nullable")]
    NotNullWithoutDefault { table: String, column: String },
}

pub fn plan(head: &Catalog, target: &Catalog) -> Result<Plan, AutogenError> {
    let mut p = Plan::default();
    for (name, t) in &target.tables {
        if !head.tables.contains_key(name) {
            p.detected.push(format!("Detected added table '{name}'"));
            p.upgrade.extend(create_all(t));
            p.downgrade.insert(0, format!("DROP TABLE {}", ident(name)));
            p.downgrade
                .insert(0, format!("-- WARNING: drops table {name} and its rows"));
            for i in t.indexes.keys().rev() {
                p.downgrade.insert(1, format!("DROP INDEX {}", ident(i)));
            }
        }
    }
    for (name, h) in &head.tables {
        if !target.tables.contains_key(name) {
            p.detected.push(format!("Detected removed table '{name}'"));
            p.warnings
                .push(format!("the upgrade drops table {name} and its rows"));
            p.upgrade
                .push(format!("-- WARNING: drops table {name} and its rows"));
            p.upgrade
                .extend(h.indexes.keys().map(|i| format!("DROP INDEX {}", ident(i))));
            p.upgrade.push(format!("DROP TABLE {}", ident(name)));
            p.downgrade
                .push(format!("-- the rows of {name} are not restored"));
            p.downgrade.extend(create_all(h));
        }
    }
    for (name, t) in &target.tables {
        if let Some(h) = head.tables.get(name) {
            table_changes(h, t, &mut p)?;
        }
    }
    Ok(p)
}

fn create_all(t: &Table) -> Vec<String> {
    let mut v = vec![t.sql.clone()];
    v.extend(t.indexes.values().map(|i| i.sql.clone()));
    v.extend(t.triggers.iter().map(|(_, s)| s.clone()));
    v
}

/// Quotes an identifier only when it needs it.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn column<'a>(t: &'a Table, name: &str) -> Option<&'a Column> {
    t.columns.iter().find(|c| c.name == name)
}

/// SQLite's rules for `ALTER TABLE ADD COLUMN`.
fn addable(t: &Table, c: &Column) -> bool {
    let constant_default = c.default.as_deref().is_none_or(|d| {
        let u = d.to_ascii_uppercase();
        !d.contains('(') && !u.starts_with("CURRENT_")
    });
    let in_constraint = t.unique.iter().any(|u| u.contains(&c.name))
        || t.foreign_keys.iter().any(|f| f.from.contains(&c.name));
    c.pk == 0
        && c.hidden == 0
        && constant_default
        && !in_constraint
        && (!c.not_null || c.default.is_some())
}

/// SQLite's rules for `ALTER TABLE DROP COLUMN` (indexes on it are dropped first).
fn droppable(t: &Table, c: &Column) -> bool {
    c.pk == 0
        && c.hidden == 0
        && !t.unique.iter().any(|u| u.contains(&c.name))
        && !t.foreign_keys.iter().any(|f| f.from.contains(&c.name))
}

fn definition(t: &Table, column: &str) -> Option<String> {
    column_definitions(&t.sql)
        .into_iter()
        .find(|(n, _)| n == column)
        .map(|(_, d)| d)
}

fn table_changes(h: &Table, t: &Table, p: &mut Plan) -> Result<(), AutogenError> {
    let name = &t.name;
    let added: Vec<&Column> = t
        .columns
        .iter()
        .filter(|c| column(h, &c.name).is_none())
        .collect();
    let removed: Vec<&Column> = h
        .columns
        .iter()
        .filter(|c| column(t, &c.name).is_none())
        .collect();
    let mut rebuild_reasons: Vec<String> = Vec::new();

    for c in &added {
        p.detected
            .push(format!("Detected added column '{name}.{}'", c.name));
        if c.not_null && c.default.is_none() {
            return Err(AutogenError::NotNullWithoutDefault {
                table: name.clone(),
                column: c.name.clone(),
            });
        }
        if !addable(t, c) || definition(t, &c.name).is_none() {
            rebuild_reasons.push(format!("add column {}", c.name));
        }
    }
    for c in &removed {
        p.detected
            .push(format!("Detected removed column '{name}.{}'", c.name));
        p.warnings.push(format!(
            "the upgrade drops column {name}.{} and its data",
            c.name
        ));
        if !droppable(h, c) || !addable(h, c) || definition(h, &c.name).is_none() {
            rebuild_reasons.push(format!("drop column {}", c.name));
        }
    }
    for hc in &h.columns {
        let Some(tc) = column(t, &hc.name) else {
            continue;
        };
        let at = format!("'{name}.{}'", hc.name);
        if hc.type_key() != tc.type_key() {
            p.detected.push(format!(
                "Detected type change from {} to {} on {at}",
                hc.decl_type, tc.decl_type
            ));
            rebuild_reasons.push(format!("type of {}", hc.name));
        }
        if hc.not_null != tc.not_null {
            p.detected.push(format!(
                "Detected {} on column {at}",
                if tc.not_null { "NOT NULL" } else { "NULL" }
            ));
            rebuild_reasons.push(format!("nullability of {}", hc.name));
            if tc.not_null {
                p.warnings.push(format!(
                    "the upgrade fails (and is rolled back) if {name}.{} holds NULLs",
                    hc.name
                ));
            }
        }
        if hc.default != tc.default {
            let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "NULL".into());
            p.detected.push(format!(
                "Detected default change from {} to {} on {at}",
                show(&hc.default),
                show(&tc.default)
            ));
            rebuild_reasons.push(format!("default of {}", hc.name));
        }
        if hc.pk != tc.pk || hc.hidden != tc.hidden {
            p.detected.push(format!(
                "Detected primary key or generated-column change on {at}"
            ));
            rebuild_reasons.push(format!("key of {}", hc.name));
        }
    }
    let (hu, tu): (BTreeSet<_>, BTreeSet<_>) =
        (h.unique.iter().collect(), t.unique.iter().collect());
    for u in tu.difference(&hu) {
        p.detected.push(format!(
            "Detected added unique constraint on '{name} ({})'",
            u.join(", ")
        ));
        rebuild_reasons.push("unique constraints".into());
    }
    for u in hu.difference(&tu) {
        p.detected.push(format!(
            "Detected removed unique constraint on '{name} ({})'",
            u.join(", ")
        ));
        rebuild_reasons.push("unique constraints".into());
    }
    let (hf, tf): (BTreeSet<_>, BTreeSet<_>) = (
        h.foreign_keys.iter().collect(),
        t.foreign_keys.iter().collect(),
    );
    for f in tf.difference(&hf) {
        p.detected.push(format!(
            "Detected added foreign key {} on table {name}",
            f.describe()
        ));
        rebuild_reasons.push("foreign keys".into());
    }
    for f in hf.difference(&tf) {
        p.detected.push(format!(
            "Detected removed foreign key {} on table {name}",
            f.describe()
        ));
        rebuild_reasons.push("foreign keys".into());
    }
    let same_index = |a: &super::catalog::Index, b: &super::catalog::Index| {
        a.unique == b.unique
            && a.partial == b.partial
            && a.columns == b.columns
            && norm(&a.sql) == norm(&b.sql)
    };
    let added_ix: Vec<_> = t
        .indexes
        .values()
        .filter(|i| !h.indexes.get(&i.name).is_some_and(|o| same_index(o, i)))
        .collect();
    let removed_ix: Vec<_> = h
        .indexes
        .values()
        .filter(|i| !t.indexes.get(&i.name).is_some_and(|o| same_index(o, i)))
        .collect();
    for i in &added_ix {
        p.detected.push(format!(
            "Detected added index '{}' on '{name} ({})'",
            i.name,
            i.columns.join(", ")
        ));
    }
    for i in &removed_ix {
        p.detected.push(format!(
            "Detected removed index '{}' on '{name} ({})'",
            i.name,
            i.columns.join(", ")
        ));
    }
    let (ht, tt): (BTreeSet<_>, BTreeSet<_>) = (
        h.triggers.iter().map(|(n, s)| (n, norm(s))).collect(),
        t.triggers.iter().map(|(n, s)| (n, norm(s))).collect(),
    );
    let added_tr: Vec<_> = t
        .triggers
        .iter()
        .filter(|(n, s)| !ht.contains(&(n, norm(s))))
        .collect();
    let removed_tr: Vec<_> = h
        .triggers
        .iter()
        .filter(|(n, s)| !tt.contains(&(n, norm(s))))
        .collect();
    for (n, _) in &added_tr {
        p.detected
            .push(format!("Detected added trigger '{n}' on table {name}"));
    }
    for (n, _) in &removed_tr {
        p.detected
            .push(format!("Detected removed trigger '{n}' on table {name}"));
    }

    if !rebuild_reasons.is_empty() {
        rebuild_reasons.dedup();
        let why = rebuild_reasons.join(", ");
        if !removed.is_empty() {
            p.upgrade.push(format!(
                "-- WARNING: drops column(s) {} of {name} and their data",
                names(&removed)
            ));
        }
        p.upgrade
            .extend(rebuild(h, t, &format!("rebuild {name}: {why}")));
        if !added.is_empty() {
            p.downgrade.push(format!(
                "-- WARNING: drops column(s) {} of {name} and their data",
                names(&added)
            ));
        }
        p.downgrade
            .extend(rebuild(t, h, &format!("rebuild {name} back: {why}")));
        return Ok(());
    }

    // In place. Upgrade: drop what goes, alter, create what comes; downgrade mirrors it.
    let up = &mut p.upgrade;
    up.extend(
        removed_tr
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER {}", ident(n))),
    );
    up.extend(
        removed_ix
            .iter()
            .map(|i| format!("DROP INDEX {}", ident(&i.name))),
    );
    for c in &removed {
        up.push(format!(
            "-- WARNING: drops column {name}.{} and its data",
            c.name
        ));
        up.push(format!(
            "ALTER TABLE {} DROP COLUMN {}",
            ident(name),
            ident(&c.name)
        ));
    }
    for c in &added {
        up.push(format!(
            "ALTER TABLE {} ADD COLUMN {}",
            ident(name),
            definition(t, &c.name).expect("checked above")
        ));
    }
    up.extend(added_ix.iter().map(|i| i.sql.clone()));
    up.extend(added_tr.iter().map(|(_, s)| s.clone()));

    let down = &mut p.downgrade;
    down.extend(
        added_tr
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER {}", ident(n))),
    );
    down.extend(
        added_ix
            .iter()
            .map(|i| format!("DROP INDEX {}", ident(&i.name))),
    );
    for c in &added {
        down.push(format!(
            "-- WARNING: drops column {name}.{} and its data",
            c.name
        ));
        down.push(format!(
            "ALTER TABLE {} DROP COLUMN {}",
            ident(name),
            ident(&c.name)
        ));
    }
    for c in &removed {
        down.push(format!(
            "ALTER TABLE {} ADD COLUMN {}",
            ident(name),
            definition(h, &c.name).expect("checked above")
        ));
    }
    down.extend(removed_ix.iter().map(|i| i.sql.clone()));
    down.extend(removed_tr.iter().map(|(_, s)| s.clone()));
    Ok(())
}

fn names(cols: &[&Column]) -> String {
    cols.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn norm(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The statements that rebuild table `from` into `to`, keeping `to`'s statement text.
fn rebuild(from: &Table, to: &Table, why: &str) -> Vec<String> {
    let name = ident(&to.name);
    let old = ident(&format!("_silica_old_{}", to.name));
    let common: Vec<String> = to
        .columns
        .iter()
        .filter(|c| c.hidden == 0 && column(from, &c.name).is_some_and(|f| f.hidden == 0))
        .map(|c| ident(&c.name))
        .collect();
    let cols = common.join(", ");
    let mut v = vec![format!("-- {why}")];
    v.extend(
        from.triggers
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER {}", ident(n))),
    );
    v.extend(
        from.indexes
            .keys()
            .map(|i| format!("DROP INDEX {}", ident(i))),
    );
    v.push("PRAGMA legacy_alter_table = ON".into());
    v.push(format!("ALTER TABLE {name} RENAME TO {old}"));
    v.push(to.sql.clone());
    v.push(format!(
        "INSERT INTO {name} ({cols}) SELECT {cols} FROM {old}"
    ));
    v.push(format!("DROP TABLE {old}"));
    v.push("PRAGMA legacy_alter_table = OFF".into());
    v.extend(to.indexes.values().map(|i| i.sql.clone()));
    v.extend(to.triggers.iter().map(|(_, s)| s.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::catalog;
    use rusqlite::Connection;

    fn cat(sql: &str) -> (Connection, Catalog) {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        let cat = catalog::read(&c).unwrap();
        (c, cat)
    }

    fn apply(conn: &Connection, stmts: &[String]) {
        for s in stmts.iter().filter(|s| !s.starts_with("--")) {
            conn.execute_batch(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    /// Upgrade then downgrade on a populated copy returns the catalog, both ways.
    fn round_trip(before: &str, after: &str, rows: &str) -> Plan {
        let (_, h) = cat(before);
        let (_, t) = cat(after);
        let plan = plan(&h, &t).unwrap();
        let (conn, _) = cat(before);
        conn.execute_batch(rows).unwrap();
        apply(&conn, &plan.upgrade);
        assert_eq!(
            catalog::read(&conn)
                .unwrap()
                .tables
                .keys()
                .collect::<Vec<_>>(),
            t.tables.keys().collect::<Vec<_>>()
        );
        assert!(
            plan_is_empty(&catalog::read(&conn).unwrap(), &t),
            "upgrade did not reach the target: {plan:#?}"
        );
        apply(&conn, &plan.downgrade);
        assert!(
            plan_is_empty(&catalog::read(&conn).unwrap(), &h),
            "downgrade did not return: {plan:#?}"
        );
        plan
    }

    fn plan_is_empty(a: &Catalog, b: &Catalog) -> bool {
        plan(a, b).map(|p| p.detected.is_empty()).unwrap_or(false)
    }

    const BASE: &str = "CREATE TABLE p (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(50), \n\tPRIMARY KEY (id)\n);\nCREATE INDEX ix_p_name ON p (name);";

    #[test]
    fn add_column_in_place() {
        let after = BASE.replace(
            "name VARCHAR(50), ",
            "name VARCHAR(50), \n\tpriority INTEGER NOT NULL DEFAULT 1, ",
        );
        let p = round_trip(BASE, &after, "INSERT INTO p VALUES (1, 'a');");
        assert_eq!(p.detected, ["Detected added column 'p.priority'"]);
        assert_eq!(
            p.upgrade,
            ["ALTER TABLE p ADD COLUMN priority INTEGER NOT NULL DEFAULT 1"]
        );
    }

    #[test]
    fn not_null_without_default_is_refused() {
        let after = BASE.replace(
            "name VARCHAR(50), ",
            "name VARCHAR(50), \n\tpriority INTEGER NOT NULL, ",
        );
        let (_, h) = cat(BASE);
        let (_, t) = cat(&after);
        assert!(matches!(
            plan(&h, &t),
            Err(AutogenError::NotNullWithoutDefault { .. })
        ));
    }

    #[test]
    fn type_change_rebuilds_and_keeps_rows() {
        let after = BASE.replace("VARCHAR(50)", "VARCHAR(100)");
        let p = round_trip(BASE, &after, "INSERT INTO p VALUES (1, 'a'), (2, 'b');");
        assert_eq!(
            p.detected,
            ["Detected type change from VARCHAR(50) to VARCHAR(100) on 'p.name'"]
        );
        assert!(p
            .upgrade
            .iter()
            .any(|s| s.starts_with("ALTER TABLE p RENAME TO _silica_old_p")));
    }

    #[test]
    fn foreign_key_and_table_added() {
        let after = format!("{BASE}\nCREATE TABLE t (\n\tid INTEGER NOT NULL, \n\tPRIMARY KEY (id)\n);")
            .replace("name VARCHAR(50), ", "name VARCHAR(50), \n\ttemplate_id INTEGER, \n\tFOREIGN KEY(template_id) REFERENCES t (id), ");
        let p = round_trip(BASE, &after, "INSERT INTO p VALUES (1, 'a');");
        assert!(p.detected.contains(&"Detected added table 't'".to_string()));
        assert!(
            p.detected
                .contains(&"Detected added foreign key (template_id)(id) on table p".to_string()),
            "{p:#?}"
        );
    }

    #[test]
    fn drops_warn() {
        let after = BASE
            .replace("\n\tname VARCHAR(50), ", "")
            .replace("\nCREATE INDEX ix_p_name ON p (name);", "");
        let p = round_trip(BASE, &after, "INSERT INTO p VALUES (1, 'a');");
        assert!(p.warnings.iter().any(|w| w.contains("drops column p.name")));
        assert!(p.upgrade.iter().any(|s| s.starts_with("-- WARNING")));
    }

    #[test]
    fn no_change_no_plan() {
        let (_, h) = cat(BASE);
        assert_eq!(plan(&h, &h).unwrap(), Plan::default());
    }
}
