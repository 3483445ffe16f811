//! `silica-cron migrate …`: each command, with the seed guide's and alembic's output formats.

use std::collections::BTreeSet;
use std::path::Path;

use proto::cli::MigrateCmd;
use proto::message::Exit;
use serde_json::json;

use super::authoring;
use super::graph::{Graph, Target};
use super::script::Source;
use super::store::{self, Db, LedgerOp, VersionOp, VERSION_TABLE_DDL};
use super::{MigrateError, Sink};

/// What a command runs against.
pub struct Ctx<'a> {
    pub db: &'a mut Db,
    pub source: Source,
    pub production: bool,
    pub json: bool,
    /// Where automatic backups go (before rebuild, and before upgrades and downgrades in
    /// production); None makes none (a scratch database).
    pub backups: Option<crate::backup::Policy>,
}

/// An automatic backup of the database before a destructive step; failing to make one stops
/// the command before anything changes.
fn auto_backup(ctx: &Ctx<'_>, why: &str, out: &mut Sink<'_>) -> Result<()> {
    let Some(policy) = &ctx.backups else {
        return Ok(());
    };
    match crate::backup::automatic(policy, why) {
        Ok(Some(w)) => {
            out.err(format!("💾 Backed up the database to {}", w.describe()));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(MigrateError::Refused(format!(
            "cannot make the automatic backup before {why}, so nothing was changed: {e}"
        ))),
    }
}

type Result<T> = std::result::Result<T, MigrateError>;

pub fn run(ctx: &mut Ctx<'_>, cmd: &MigrateCmd, out: &mut Sink<'_>) -> Result<Exit> {
    let graph = super::load_graph(&ctx.source)?;
    match cmd {
        MigrateCmd::Status => status(ctx, &graph, out),
        MigrateCmd::Current { verbose } => current(ctx, &graph, *verbose, out),
        MigrateCmd::History {
            verbose,
            indicate_current,
            rev_range,
        } => history(
            ctx,
            &graph,
            *verbose,
            *indicate_current,
            rev_range.as_deref(),
            out,
        ),
        MigrateCmd::Heads { verbose } => heads(ctx, &graph, *verbose, out),
        MigrateCmd::Branches { verbose } => branches(ctx, &graph, *verbose, out),
        MigrateCmd::Show { rev } => show(ctx, &graph, rev, out),
        MigrateCmd::Upgrade {
            target, sql: true, ..
        } => offline(&graph, target, true, out),
        MigrateCmd::Downgrade { target, sql: true } => offline(&graph, target, false, out),
        MigrateCmd::Upgrade {
            target,
            stamp_only: true,
            ..
        } => stamp(ctx, &graph, target, false, out),
        MigrateCmd::Upgrade { target, .. } => upgrade(ctx, &graph, target, target, out),
        MigrateCmd::Downgrade { target, .. } => downgrade(ctx, &graph, target, out),
        MigrateCmd::Stamp { target, purge } => stamp(ctx, &graph, target, *purge, out),
        MigrateCmd::Rebuild => rebuild(ctx, &graph, out),
        MigrateCmd::Create { message, empty } => {
            authoring::create(&graph, &ctx.source, message, *empty, out)
        }
        MigrateCmd::Check => authoring::check(&graph, &ctx.source, out),
        MigrateCmd::Merge { message, revisions } => {
            authoring::merge(&graph, &ctx.source, message, revisions, out)
        }
    }
}

/// The version rows as graph indexes; rows naming unknown revisions are an error.
fn current_revs(ctx: &mut Ctx<'_>, graph: &Graph) -> Result<Vec<usize>> {
    let rows = ctx.db.versions()?;
    let (known, unknown): (Vec<_>, Vec<_>) = rows.iter().partition(|r| graph.lookup(r).is_some());
    if !unknown.is_empty() {
        return Err(MigrateError::UnknownDbRevision {
            ids: unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut idx: Vec<usize> = known.iter().filter_map(|r| graph.lookup(r)).collect();
    let order: Vec<usize> = graph.topo().to_vec();
    idx.sort_by_key(|i| order.iter().position(|o| o == i));
    Ok(idx)
}

/// Applied revisions whose files changed since they were applied (per the ledger).
pub fn drift(db: &mut Db, graph: &Graph) -> Result<Vec<String>> {
    let path = db.path().to_owned();
    let Some(conn) = db.reader()? else {
        return Ok(vec![]);
    };
    let rows = store::ledger(conn).map_err(|source| store::StoreError::Sqlite { path, source })?;
    Ok(rows
        .into_iter()
        .filter_map(|(rev, sum)| {
            let i = graph.lookup(&rev)?;
            (graph.rev(i).checksum != sum).then(|| {
                format!(
                    "revision {rev} ({}) changed since it was applied",
                    graph.rev(i).path
                )
            })
        })
        .collect())
}

/// Warns about changed revision files; in production refuses to go on.
fn check_drift(ctx: &mut Ctx<'_>, graph: &Graph, out: &mut Sink<'_>) -> Result<()> {
    let changed = drift(ctx.db, graph)?;
    if changed.is_empty() {
        return Ok(());
    }
    if ctx.production {
        return Err(MigrateError::Refused(format!(
            "{}; refused in production. Restore the file as it was applied, or, if the change is intended, record it with: silica-cron migrate stamp current",
            changed.join("; ")
        )));
    }
    for c in changed {
        out.err(format!(
            "⚠️  {c}; if the change is intended, record it with: silica-cron migrate stamp current"
        ));
    }
    Ok(())
}

fn markers(graph: &Graph, i: usize) -> String {
    let mut s = String::new();
    if graph.is_head(i) {
        s.push_str(" (head)");
    }
    if graph.is_branchpoint(i) {
        s.push_str(" (branchpoint)");
    }
    if graph.is_mergepoint(i) {
        s.push_str(" (mergepoint)");
    }
    s
}

fn rev_json(graph: &Graph, i: usize, current: &[usize]) -> serde_json::Value {
    let r = graph.rev(i);
    json!({
        "revision": r.id,
        "parents": r.parents,
        "children": graph.children(i).iter().map(|&c| graph.id(c)).collect::<Vec<_>>(),
        "message": r.message,
        "create_date": r.create_date,
        "path": r.path,
        "head": graph.is_head(i),
        "branchpoint": graph.is_branchpoint(i),
        "mergepoint": graph.is_mergepoint(i),
        "current": current.contains(&i),
    })
}

fn emit_json(out: &mut Sink<'_>, v: serde_json::Value) {
    out.out(serde_json::to_string_pretty(&v).expect("json values serialize"));
}

/// alembic's verbose block (history -v, heads -v, show, current -v).
fn verbose_block(graph: &Graph, i: usize, out: &mut Sink<'_>) {
    let r = graph.rev(i);
    out.out(format!("Rev: {}{}", r.id, markers(graph, i)));
    match r.parents.as_slice() {
        [] => out.out("Parent: <base>"),
        [p] => out.out(format!("Parent: {p}")),
        many => out.out(format!("Merges: {}", many.join(", "))),
    }
    if graph.is_branchpoint(i) {
        out.out(format!("Branches into: {}", graph.ids(graph.children(i))));
    }
    out.out(format!("Path: {}", r.path));
    out.out("");
    for l in &r.doc {
        out.out(format!("    {l}"));
    }
    out.out("");
}

fn status(ctx: &mut Ctx<'_>, graph: &Graph, out: &mut Sink<'_>) -> Result<Exit> {
    let heads: BTreeSet<&str> = graph.heads().iter().map(|&i| graph.id(i)).collect();
    let rows = ctx.db.versions()?;
    let unknown: Vec<&String> = rows.iter().filter(|r| graph.lookup(r).is_none()).collect();
    let current: BTreeSet<&str> = rows.iter().map(String::as_str).collect();
    let up_to_date = ctx.db.exists() && unknown.is_empty() && current == heads;
    if ctx.json {
        emit_json(
            out,
            json!({
                "database": ctx.db.path(),
                "exists": ctx.db.exists(),
                "up_to_date": up_to_date,
                "current": rows,
                "heads": heads,
                "unknown": unknown,
            }),
        );
    } else if !unknown.is_empty() {
        let ids: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        out.out(format!(
            "⚠️  Cron database is at revision {}, which no revision file defines",
            ids.join(", ")
        ));
        out.out("   It was made by a newer silica-cron, or a revision file was removed.");
        out.out("   Check its schema, then run: silica-cron migrate stamp --purge <revision>");
    } else if up_to_date {
        out.out("✅ Cron database is up to date");
    } else {
        out.out("⚠️  Cron database needs migration");
        if heads.len() > 1 {
            out.out(format!(
                "   The revisions have {} heads ({}); merge them, or apply all with:",
                heads.len(),
                heads.iter().copied().collect::<Vec<_>>().join(", ")
            ));
            out.out("   Run: silica-cron migrate upgrade heads");
        } else {
            out.out("   Run: silica-cron migrate upgrade");
        }
    }
    if !ctx.json {
        for c in drift(ctx.db, graph)? {
            out.err(format!("⚠️  {c}; if the change is intended, record it with: silica-cron migrate stamp current"));
        }
    }
    Ok(if up_to_date { Exit::OK } else { Exit::NOT_OK })
}

fn current(ctx: &mut Ctx<'_>, graph: &Graph, verbose: bool, out: &mut Sink<'_>) -> Result<Exit> {
    let cur = current_revs(ctx, graph)?;
    if ctx.json {
        let revs: Vec<_> = cur.iter().map(|&i| rev_json(graph, i, &cur)).collect();
        emit_json(out, json!({ "database": ctx.db.path(), "current": revs }));
        return Ok(Exit::OK);
    }
    if verbose {
        out.out(format!(
            "Current revision(s) for {}:",
            proto::paths::sqlite_url_for(ctx.db.path())
        ));
    }
    for &i in &cur {
        if verbose {
            verbose_block(graph, i, out);
        } else {
            out.out(format!("{}{}", graph.id(i), markers(graph, i)));
        }
    }
    Ok(Exit::OK)
}

fn history_line(graph: &Graph, i: usize, current: Option<&[usize]>) -> String {
    let r = graph.rev(i);
    let parents = if r.parents.is_empty() {
        "<base>".to_string()
    } else {
        r.parents.join(", ")
    };
    let cur = match current {
        Some(c) if c.contains(&i) => " (current)",
        _ => "",
    };
    format!(
        "{parents} -> {}{}{cur}, {}",
        r.id,
        markers(graph, i),
        r.message
    )
}

fn history(
    ctx: &mut Ctx<'_>,
    graph: &Graph,
    verbose: bool,
    indicate_current: bool,
    range: Option<&str>,
    out: &mut Sink<'_>,
) -> Result<Exit> {
    let current = if indicate_current || range.is_some_and(|r| r.contains("current")) {
        Some(current_revs(ctx, graph)?)
    } else {
        None
    };
    let cur = current.as_deref().unwrap_or(&[]);
    let (lower, upper): (Option<Target>, Option<Target>) = match range {
        None => (None, None),
        Some(r) => {
            let (a, b) = r.split_once(':').ok_or_else(|| {
                MigrateError::Usage(format!("history range {r:?} must be A:B, A: or :B"))
            })?;
            let side = |s: &str| -> Result<Option<Target>> {
                Ok(if s.is_empty() {
                    None
                } else {
                    Some(graph.resolve_target(s, cur)?)
                })
            };
            (side(a)?, side(b)?)
        }
    };
    let above = lower.map(|l| {
        let mut d = graph.strict_descendants(&l);
        for i in l {
            d[i] = true;
        }
        d
    });
    let below = upper.map(|u| graph.ancestors(&u));
    let shown: Vec<usize> = graph
        .topo()
        .iter()
        .rev()
        .copied()
        .filter(|&i| above.as_ref().is_none_or(|a| a[i]) && below.as_ref().is_none_or(|b| b[i]))
        .collect();
    if ctx.json {
        let revs: Vec<_> = shown.iter().map(|&i| rev_json(graph, i, cur)).collect();
        emit_json(out, json!(revs));
        return Ok(Exit::OK);
    }
    for i in shown {
        if verbose {
            verbose_block(graph, i, out);
        } else {
            out.out(history_line(
                graph,
                i,
                current.as_deref().filter(|_| indicate_current),
            ));
        }
    }
    Ok(Exit::OK)
}

fn heads(ctx: &mut Ctx<'_>, graph: &Graph, verbose: bool, out: &mut Sink<'_>) -> Result<Exit> {
    let heads = graph.heads();
    if ctx.json {
        let revs: Vec<_> = heads.iter().map(|&i| rev_json(graph, i, &[])).collect();
        emit_json(out, json!(revs));
        return Ok(Exit::OK);
    }
    for i in heads {
        if verbose {
            verbose_block(graph, i, out);
        } else {
            out.out(format!("{}{}", graph.id(i), markers(graph, i)));
        }
    }
    Ok(Exit::OK)
}

fn branches(ctx: &mut Ctx<'_>, graph: &Graph, verbose: bool, out: &mut Sink<'_>) -> Result<Exit> {
    let points: Vec<usize> = graph
        .topo()
        .iter()
        .copied()
        .filter(|&i| graph.is_branchpoint(i))
        .collect();
    if ctx.json {
        let revs: Vec<_> = points.iter().map(|&i| rev_json(graph, i, &[])).collect();
        emit_json(out, json!(revs));
        return Ok(Exit::OK);
    }
    for i in points {
        if verbose {
            verbose_block(graph, i, out);
        } else {
            out.out(format!("{}{}", graph.id(i), markers(graph, i)));
        }
        for &c in graph.children(i) {
            let msg = if verbose {
                format!(", {}", graph.rev(c).message)
            } else {
                String::new()
            };
            out.out(format!(
                "             -> {}{}{msg}",
                graph.id(c),
                markers(graph, c)
            ));
        }
        out.out("");
    }
    Ok(Exit::OK)
}

fn show(ctx: &mut Ctx<'_>, graph: &Graph, spec: &str, out: &mut Sink<'_>) -> Result<Exit> {
    let needs_db = spec == "current" || spec.contains(['+', '-']);
    let cur = if needs_db {
        current_revs(ctx, graph)?
    } else {
        vec![]
    };
    let target = match spec {
        "heads" => graph.heads(),
        _ => graph.resolve_target(spec, &cur)?,
    };
    if ctx.json {
        let revs: Vec<_> = target.iter().map(|&i| rev_json(graph, i, &cur)).collect();
        emit_json(out, json!(revs));
        return Ok(Exit::OK);
    }
    for i in target {
        verbose_block(graph, i, out);
    }
    Ok(Exit::OK)
}

/// How the version rows change when `rev` is applied on top of `heads` (updated in place).
fn upgrade_ops(graph: &Graph, heads: &mut Vec<usize>, rev: usize) -> Vec<VersionOp> {
    let replaced: Vec<usize> = graph
        .parents(rev)
        .iter()
        .copied()
        .filter(|p| heads.contains(p))
        .collect();
    heads.retain(|h| !replaced.contains(h));
    heads.push(rev);
    let id = graph.id(rev).to_string();
    match replaced.split_first() {
        None => vec![VersionOp::Insert(id)],
        Some((first, rest)) => {
            let mut ops: Vec<VersionOp> = rest
                .iter()
                .map(|&r| VersionOp::Delete(graph.id(r).into()))
                .collect();
            ops.push(VersionOp::Update {
                from: graph.id(*first).into(),
                to: id,
            });
            ops
        }
    }
}

/// How the version rows change when `rev` is reverted from `heads` (updated in place).
fn downgrade_ops(graph: &Graph, heads: &mut Vec<usize>, rev: usize) -> Vec<VersionOp> {
    heads.retain(|&h| h != rev);
    let still = graph.ancestors(heads);
    let restored: Vec<usize> = graph
        .parents(rev)
        .iter()
        .copied()
        .filter(|&p| !still[p])
        .collect();
    heads.extend(&restored);
    let id = graph.id(rev).to_string();
    match restored.split_first() {
        None => vec![VersionOp::Delete(id)],
        Some((first, rest)) => {
            let mut ops = vec![VersionOp::Update {
                from: id,
                to: graph.id(*first).into(),
            }];
            ops.extend(rest.iter().map(|&r| VersionOp::Insert(graph.id(r).into())));
            ops
        }
    }
}

/// `upgrade -1` and `downgrade +1` would silently do nothing; say which command moves that way.
fn check_direction(target: &str, sign: char, cmd: &str, other: &str) -> Result<()> {
    let wrong = if sign == '+' { '-' } else { '+' };
    match target.strip_prefix(wrong) {
        Some(n) if n.parse::<usize>().is_ok() => Err(MigrateError::Usage(format!(
            "Relative revision {target} didn't produce {n} migrations: {cmd} moves the other way; use {other} {target}"
        ))),
        _ => Ok(()),
    }
}

fn describe(graph: &Graph, heads: &[usize]) -> String {
    if heads.is_empty() {
        "base (no revision)".into()
    } else {
        graph.ids(heads)
    }
}

/// `shown` is the target as the user named it, for the announcement line.
fn upgrade(
    ctx: &mut Ctx<'_>,
    graph: &Graph,
    target: &str,
    shown: &str,
    out: &mut Sink<'_>,
) -> Result<Exit> {
    check_direction(target, '+', "upgrade", "downgrade")?;
    let mut heads = current_revs(ctx, graph)?;
    check_drift(ctx, graph, out)?;
    let target = graph.resolve_target(target, &heads)?;
    let path = graph.upgrade_path(&heads, &target);
    if ctx.production && !path.is_empty() && ctx.db.exists() {
        auto_backup(ctx, "upgrade", out)?;
    }
    out.out(format!("Upgrading cron database to {shown}..."));
    let db_path = ctx.db.path().to_owned();
    for rev in path {
        let stays = describe(graph, &heads);
        let ops = upgrade_ops(graph, &mut heads, rev);
        let r = graph.rev(rev);
        out.info(format!(
            "Running upgrade {} -> {}, {}",
            r.parents.join(", "),
            r.id,
            r.message
        ));
        let step = store::Step::upgrade(r, &stays);
        let conn = ctx.db.writer().map_err(|e| step.open_failed(e))?;
        let record = LedgerOp::Record {
            revision: r.id.clone(),
            checksum: r.checksum.clone(),
        };
        store::apply_step(conn, &db_path, &step, &r.upgrade, &ops, &record)?;
    }
    Ok(Exit::OK)
}

fn downgrade(ctx: &mut Ctx<'_>, graph: &Graph, target: &str, out: &mut Sink<'_>) -> Result<Exit> {
    check_direction(target, '-', "downgrade", "upgrade")?;
    let mut heads = current_revs(ctx, graph)?;
    check_drift(ctx, graph, out)?;
    let resolved = graph.resolve_target(target, &heads)?;
    let mut path = graph.downgrade_path(&heads, &resolved)?;
    // `REV-N` walks down REV's own branch: other heads keep their revisions.
    if let Some((anchor, _, _)) = super::graph::split_relative(target) {
        if !matches!(anchor, "" | "current" | "head" | "heads" | "base") {
            let branch = graph.ancestors(&[graph.resolve_id(anchor)?]);
            path.retain(|&i| branch[i]);
            let kept: Vec<usize> = heads
                .iter()
                .copied()
                .filter(|h| !path.contains(h))
                .collect();
            let needed = graph.ancestors(&kept);
            if let Some(&i) = path.iter().find(|&&i| needed[i]) {
                return Err(MigrateError::Usage(format!(
                    "cannot go down to {target}: {} is still needed by {}",
                    graph.id(i),
                    graph.ids(&kept)
                )));
            }
        }
    }
    if ctx.production && !path.is_empty() {
        auto_backup(ctx, "downgrade", out)?;
        out.err(format!(
            "⚠️  Downgrading a production database ({}): columns and tables the reverted revisions added are dropped with their data",
            ctx.db.path().display()
        ));
    }
    out.out(format!("Downgrading cron database to {target}..."));
    let db_path = ctx.db.path().to_owned();
    for rev in path {
        let stays = describe(graph, &heads);
        let ops = downgrade_ops(graph, &mut heads, rev);
        let r = graph.rev(rev);
        out.info(format!(
            "Running downgrade {} -> {}, {}",
            r.id,
            r.parents.join(", "),
            r.message
        ));
        let step = store::Step::downgrade(r, &stays);
        let conn = ctx.db.writer().map_err(|e| step.open_failed(e))?;
        store::apply_step(
            conn,
            &db_path,
            &step,
            &r.downgrade,
            &ops,
            &LedgerOp::Forget(r.id.clone()),
        )?;
    }
    Ok(Exit::OK)
}

fn stamp(
    ctx: &mut Ctx<'_>,
    graph: &Graph,
    target: &str,
    purge: bool,
    out: &mut Sink<'_>,
) -> Result<Exit> {
    let (from, cur): (Vec<String>, Vec<usize>) = if purge {
        (ctx.db.versions()?, vec![])
    } else {
        let cur = current_revs(ctx, graph)?;
        (cur.iter().map(|&i| graph.id(i).to_string()).collect(), cur)
    };
    let target = graph.resolve_target(target, &cur)?;
    let to: Vec<String> = target.iter().map(|&i| graph.id(i).to_string()).collect();
    out.info(format!(
        "Running stamp_revision {} -> {}",
        from.join(", "),
        to.join(", ")
    ));
    let db_path = ctx.db.path().to_owned();
    let included = graph.ancestors(&target);
    let records: Vec<(String, String)> = graph
        .topo()
        .iter()
        .filter(|&&i| included[i])
        .map(|&i| (graph.id(i).to_string(), graph.rev(i).checksum.clone()))
        .collect();
    store::stamp(ctx.db.writer()?, &db_path, &to, &records)?;
    Ok(Exit::OK)
}

fn rebuild(ctx: &mut Ctx<'_>, graph: &Graph, out: &mut Sink<'_>) -> Result<Exit> {
    if ctx.production {
        return Err(MigrateError::Refused(
            "migrate rebuild is refused in production (SILICA_ENVIRONMENT=production): it deletes the database and all its data".into(),
        ));
    }
    let path = ctx.db.path().to_owned();
    let existed = ctx.db.exists();
    // Build the new database beside the old one and swap it in with a rename, so a crash
    // leaves either the old database or the complete new one.
    let tmp = sibling(&path, ".rebuild");
    remove_db_files(&tmp)?;
    let mut fresh = Db::new(&tmp);
    if existed {
        auto_backup(ctx, "rebuild", out)?;
        ctx.db.close();
        remove_db_files_except_main(&path)?;
        std::fs::remove_file(&path)
            .or_else(ignore_missing)
            .map_err(|source| MigrateError::Io {
                what: "cannot remove database",
                path: path.display().to_string(),
                source,
            })?;
        out.out(format!("🗑️  Removed existing database: {}", path.display()));
    }
    out.out("🔄 Rebuilding database from migrations...");
    let mut sub = Ctx {
        db: &mut fresh,
        source: ctx.source.clone(),
        production: false,
        json: false,
        backups: None,
    };
    let result = upgrade(&mut sub, graph, "heads", "head", out);
    fresh.close();
    if let Err(e) = result {
        let _ = remove_db_files(&tmp);
        return Err(e);
    }
    // The new file was written in WAL mode and closed cleanly: no -wal or -shm remain.
    std::fs::rename(&tmp, &path).map_err(|source| MigrateError::Io {
        what: "cannot move the rebuilt database into place at",
        path: path.display().to_string(),
        source,
    })?;
    ctx.db.close();
    out.out("✅ Database rebuilt successfully from migrations");
    Ok(Exit::OK)
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn remove_db_files_except_main(path: &Path) -> Result<()> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sibling(path, suffix);
        std::fs::remove_file(&p)
            .or_else(ignore_missing)
            .map_err(|source| MigrateError::Io {
                what: "cannot remove",
                path: p.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

fn remove_db_files(path: &Path) -> Result<()> {
    remove_db_files_except_main(path)?;
    std::fs::remove_file(path)
        .or_else(ignore_missing)
        .map_err(|source| MigrateError::Io {
            what: "cannot remove",
            path: path.display().to_string(),
            source,
        })
}

/// `upgrade … --sql` / `downgrade A:B --sql`: the SQL of the steps, as alembic prints it, each
/// revision wrapped in BEGIN/COMMIT so that piping it into sqlite3 is as atomic as the online path.
fn offline(graph: &Graph, spec: &str, up: bool, out: &mut Sink<'_>) -> Result<Exit> {
    let (from_spec, to_spec) = match spec.split_once(':') {
        Some((a, b)) => (Some(a), b),
        None if up => (None, spec),
        None => {
            return Err(MigrateError::Usage(
                "downgrade with --sql requires <fromrev>:<torev>".into(),
            ))
        }
    };
    let from: Vec<usize> = match from_spec {
        Some(a) => graph.resolve_target(a, &[])?,
        None => vec![],
    };
    let to = graph.resolve_target(to_spec, &from)?;
    let mut heads = from.clone();
    let path = if up {
        graph.upgrade_path(&from, &to)
    } else {
        graph.downgrade_path(&from, &to)?
    };
    if up && from.is_empty() && !path.is_empty() {
        out.out(format!("{};\n", VERSION_TABLE_DDL.replace('\t', "    ")));
        out.out(format!("{};\n", store::LEDGER_DDL.replace('\t', "    ")));
    }
    for rev in path {
        let r = graph.rev(rev);
        let (ops, stmts, ledger, line) = if up {
            let record = LedgerOp::Record {
                revision: r.id.clone(),
                checksum: r.checksum.clone(),
            };
            (
                upgrade_ops(graph, &mut heads, rev),
                &r.upgrade,
                record,
                format!("upgrade {} -> {}", r.parents.join(", "), r.id),
            )
        } else {
            let forget = LedgerOp::Forget(r.id.clone());
            (
                downgrade_ops(graph, &mut heads, rev),
                &r.downgrade,
                forget,
                format!("downgrade {} -> {}", r.id, r.parents.join(", ")),
            )
        };
        out.out(format!("-- Running {line}\n"));
        out.out("BEGIN;\n");
        for s in stmts {
            out.out(format!("{};\n", s.sql.replace('\t', "    ")));
        }
        for op in ops {
            out.out(format!("{};\n", op.offline_sql()));
        }
        out.out(format!("{};\n", ledger.offline_sql()));
        out.out("COMMIT;\n");
    }
    Ok(Exit::OK)
}
