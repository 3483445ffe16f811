//! Shell completions and manual pages (issue #5, item 9), from the real binary.

use std::process::Command;

use silica_cron_tests::{bin, run, Env};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bash_completion_sources_and_completes_subcommands() {
    let env = Env::built_in();
    let out = env.cli(&["completions", "bash"]);
    out.ok();
    assert!(out.stdout.contains("migrate") && out.stdout.contains("jobs"));
    let script = env.path().join("silica-cron.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Sourced in a fresh bash, it registers itself, and completing `silica-cron mig`, a
    // subcommand of `jobs` and an option two levels down offers the right words (clap_complete
    // alone fails past the first level for a hyphenated name: see ctl/src/docs.rs).
    let check = format!(
        r#"source {s} && complete -p silica-cron &&
        COMP_WORDS=(silica-cron mig); COMP_CWORD=1; _silica__cron silica-cron mig silica-cron; echo "top: ${{COMPREPLY[*]}}";
        COMP_WORDS=(silica-cron jobs a); COMP_CWORD=2; _silica__cron silica-cron a jobs; echo "jobs: ${{COMPREPLY[*]}}";
        COMP_WORDS=(silica-cron migrate upgrade --s); COMP_CWORD=3; _silica__cron silica-cron --s upgrade; echo "upgrade: ${{COMPREPLY[*]}}""#,
        s = script.display()
    );
    let out = run(Command::new("bash").args(["--norc", "-c", &check]));
    out.ok();
    out.stdout_has("complete -o bashdefault")
        .stdout_has("top: migrate")
        .stdout_has("jobs: add")
        .stdout_has("--stamp-only");
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    let env = Env::built_in();
    for (shell, marker) in [
        ("zsh", "#compdef silica-cron"),
        ("fish", "complete -c silica-cron"),
    ] {
        let out = env.cli(&["completions", shell]);
        out.ok().stdout_has(marker).stdout_has("migrate");
        if have(shell) {
            let file = env.path().join(format!("completion.{shell}"));
            std::fs::write(&file, &out.stdout).unwrap();
            run(Command::new(shell).arg("-n").arg(&file)).ok();
        }
    }
    env.cli(&["completions", "tcsh"]).code(2);
}

/// Documentation needs no daemon and no valid configuration.
#[test]
fn docs_work_with_a_broken_config_file() {
    let env = Env::built_in();
    let config = env.path().join("bad.toml");
    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let env = env.with_var("SILICA_CRON_CONFIG", config.to_str().unwrap());
    env.cli(&["status"]).code(1);
    env.cli(&["completions", "bash"]).ok();
    env.cli(&["man"]).ok().stdout_has(".TH silica-cron 1");
}

#[test]
fn man_pages_for_both_binaries_and_every_subcommand() {
    let env = Env::built_in();
    let dir = env.path().join("share/man/man1");
    env.cli(&["man", dir.to_str().unwrap()]).ok();
    for (page, title) in [
        ("silica-cron.1", ".TH silica-cron 1"),
        ("silica-cron-jobs-add.1", ".TH silica-cron-jobs-add 1"),
        (
            "silica-cron-migrate-upgrade.1",
            ".TH silica-cron-migrate-upgrade 1",
        ),
        ("silica-cron-completions.1", ".TH silica-cron-completions 1"),
        ("silica-crond.1", ".TH silica-crond 1"),
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(title), "{page}:\n{text}");
        assert!(text.contains(".SH NAME"), "{page}");
    }
    if have("man") {
        let out = run(Command::new("man")
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .args(["-l", dir.join("silica-crond.1").to_str().unwrap()]));
        out.ok().stdout_has("NAME").stdout_has("--migrations-dir");
        let out = run(Command::new("man")
            .env("MANPAGER", "cat")
            .args(["-l", dir.join("silica-cron-jobs-add.1").to_str().unwrap()]));
        out.ok().stdout_has("SYNOPSIS");
    }
    // The binary the tests run is the one documented.
    assert!(bin("silica-cron").is_file());
}
