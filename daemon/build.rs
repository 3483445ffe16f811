//! Embeds migrations/versions/*.sql into silica-crond, so the binary carries its schema history.

use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../migrations/versions");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("migrations/versions must exist")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    let mut out = String::from("/// Revision files built into the binary: (file name, text).\npub static EMBEDDED: &[(&str, &str)] = &[\n");
    for n in &names {
        let path = dir.join(n);
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!(
            "    ({n:?}, include_str!({:?})),\n",
            path.canonicalize().unwrap()
        ));
    }
    out.push_str("];\n");
    let schema = dir.parent().unwrap().join("schema.sql");
    println!("cargo:rerun-if-changed={}", schema.display());
    out.push_str(&format!(
        "/// migrations/schema.sql, the declared schema.\npub static EMBEDDED_SCHEMA: &str = include_str!({:?});\n",
        schema.canonicalize().unwrap()
    ));
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("embedded_migrations.rs"),
        out,
    )
    .unwrap();
}
