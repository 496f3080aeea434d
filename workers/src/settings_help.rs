//! `buildlogs --help`'s list of every setting, gathered from the commands' own flags: each
//! environment variable once (once per default), under the commands that read it, with its
//! default and the first sentence of its help. Built from the same definitions as each
//! command's `--help`, so the two cannot disagree.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Read by every command: the global flags.
const EVERY_COMMAND: &str = "every command";

/// Variables read outside clap, so absent from the walk.
const OTHERS: &str = "Also read: RUST_LOG (log filter, default `info`), NO_COLOR (no colour \
                      codes in logs at a terminal), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                      AWS_REGION, AWS_ENDPOINT_URL (with an s3:// OBJECT_STORE_URL).";

/// One setting: its variable, default and first sentence of help.
struct Setting {
    env: String,
    default: Option<String>,
    help: String,
}

/// The text after the top-level help: every setting of `root` and of its subcommands (at any
/// depth), grouped by the commands that read it.
pub fn every_setting(root: &clap::Command) -> String {
    // (setting, commands that read it), in the order first met.
    let mut found: Vec<(Setting, Vec<String>)> = Vec::new();
    collect(root, "", &mut found);
    let mut groups: BTreeMap<String, Vec<&Setting>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (setting, commands) in &found {
        let key = label(commands);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(setting);
    }
    let width = found.iter().map(|(s, _)| s.env.len()).max().unwrap_or(0);
    let mut out = String::from(
        "Settings: each is an environment variable or the flag named in `buildlogs <command> \
         --help`, which says more.\n",
    );
    for key in order {
        let _ = writeln!(out, "\nRead by {key}:");
        for s in &groups[&key] {
            let default = s
                .default
                .as_ref()
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:width$}  {}{default}", s.env, s.help);
        }
    }
    let _ = write!(out, "\n{OTHERS}");
    out
}

fn collect(command: &clap::Command, path: &str, found: &mut Vec<(Setting, Vec<String>)>) {
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let reader = if path.is_empty() {
            EVERY_COMMAND.to_owned()
        } else {
            path.to_owned()
        };
        // A variable with a different default per command (`BUILDLOGS_METRICS_LISTEN`) is
        // listed once per default.
        let new = setting(env, arg);
        match found
            .iter_mut()
            .find(|(s, _)| s.env == new.env && s.default == new.default)
        {
            Some((_, commands)) => {
                if !commands.contains(&reader) {
                    commands.push(reader);
                }
            }
            None => found.push((new, vec![reader])),
        }
    }
    for sub in command.get_subcommands() {
        let sub_path = if path.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{path} {}", sub.get_name())
        };
        collect(sub, &sub_path, found);
    }
}

fn setting(env: &str, arg: &clap::Arg) -> Setting {
    let shown = if arg.is_hide_default_value_set() {
        &[][..]
    } else {
        arg.get_default_values()
    };
    let defaults: Vec<String> = shown
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    // The first sentence: the rest is in the command's own help.
    let first = match help.find(". ") {
        Some(end) => &help[..end],
        None => help.trim_end().trim_end_matches('.'),
    };
    Setting {
        env: env.to_owned(),
        default: (!defaults.is_empty()).then(|| defaults.join(",")),
        help: first.trim().to_owned(),
    }
}

/// "web and all", "bench append, bench reads and bench soak".
fn label(commands: &[String]) -> String {
    match commands {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_variable_read_by_several_commands_is_listed_once_under_them_all() {
        #[derive(clap::Parser)]
        struct Root {
            /// Where. More words.
            #[arg(long, env = "ROOT_VAR", default_value = "x", global = true)]
            _root: String,
            #[command(subcommand)]
            _command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            A {
                /// Shared one
                #[arg(long, env = "SHARED")]
                _shared: Option<String>,
            },
            B {
                /// Shared one
                #[arg(long, env = "SHARED")]
                _shared: Option<String>,
                #[arg(long)]
                _no_env: bool,
            },
        }
        let text = super::every_setting(&<Root as clap::CommandFactory>::command());
        assert!(
            text.contains("Read by every command:\n  ROOT_VAR  Where [default: x]\n"),
            "{text}"
        );
        assert!(
            text.contains("Read by a and b:\n  SHARED    Shared one\n"),
            "{text}"
        );
        assert_eq!(text.matches("SHARED").count(), 1, "{text}");
    }
}
