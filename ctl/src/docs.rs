//! Shell completions and manual pages, generated from the same clap definitions that parse the
//! command line, so they cannot drift from it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use proto::cli::DaemonCli;
use proto::message::exit_code;

use crate::render;

/// `silica-cron completions SHELL`: the script on stdout.
pub fn completions(shell: Shell) -> i32 {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "silica-cron", &mut out);
    if shell == Shell::Bash {
        out = fix_bash_arms(&out);
    }
    write_stdout(&out)
}

/// clap_complete's bash script (4.6.11) spells the subcommand states two ways for a bin name
/// with a hyphen: the word loop reaches `silica__cron__subcmd__jobs`, the case arms say
/// `silica__subcmd__cron__subcmd__jobs`, so nothing past the first subcommand completes
/// (clap-rs/clap#6421, open). Respell the arms as the loop does; once fixed upstream this
/// replaces nothing. The test completes `silica-cron jobs a` to catch either breaking.
fn fix_bash_arms(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("silica__subcmd__cron__subcmd__", "silica__cron__subcmd__")
        .into_bytes()
}

/// `silica-cron man [DIR]`: with DIR, silica-cron.1, one page per subcommand
/// (silica-cron-jobs-add.1, …) and silica-crond.1 with its own, written into DIR (created if
/// missing); without, silica-cron.1 on stdout.
pub fn man(dir: Option<&Path>) -> i32 {
    let Some(dir) = dir else {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(crate::Cli::command()).render(&mut out) {
            return render::fail(&format!("cannot render the manual page: {e}"));
        }
        return write_stdout(&out);
    };
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(crate::Cli::command(), dir))
        .and_then(|()| clap_mangen::generate_to(DaemonCli::command(), dir));
    match written {
        Ok(()) => {
            println!("manual pages written to {}", dir.display());
            exit_code::OK
        }
        Err(e) => render::fail(&format!(
            "cannot write manual pages to {}: {e}",
            dir.display()
        )),
    }
}

fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => exit_code::OK,
        // A closed pipe (`| head`) is the reader's choice, not a failure worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit_code::OK,
        Err(e) => render::fail(&e.to_string()),
    }
}
