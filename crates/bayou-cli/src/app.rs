//! `bayou app`: the SOSP'95 applications as clients of a running cluster.
//!
//! As in Bayou, the application lives at the client: it turns a request
//! into a Bayou write (update, dependency check, merge procedure; see
//! `bayou-apps`) and submits it to any replica with `BAYOU.WRITE`. Reads use
//! `BAYOU.SCAN` in the full view (tentative results included, shown as
//! such) and the committed view.

use anyhow::{Context, bail};
use clap::Subcommand;

use bayou_apps::{bib, meeting};

/// The application commands.
#[derive(Subcommand)]
pub enum AppCmd {
    /// Request a meeting room: preferred time first, then alternates
    /// (DAY/HOUR each); the merge procedure books the first free one.
    Meeting {
        /// The replica to submit to.
        #[arg(long, default_value = "127.0.0.1:7001")]
        server: String,
        /// The meeting's name (unique per request).
        name: String,
        /// The room.
        room: String,
        /// Length in whole hours.
        hours: u32,
        /// Times as DAY/HOUR: the preferred one, then alternates.
        #[arg(required = true)]
        times: Vec<String>,
    },
    /// Add a paper to the bibliography under a key such as Jones95.
    Bib {
        /// The replica to submit to.
        #[arg(long, default_value = "127.0.0.1:7001")]
        server: String,
        /// The key wanted (first author and year).
        key: String,
        /// The title.
        #[arg(required = true)]
        title: Vec<String>,
    },
    /// Print the schedule: each meeting with its time, committed or
    /// tentative, and the requests that fit nowhere.
    Schedule {
        /// The replica to read from.
        #[arg(long, default_value = "127.0.0.1:7001")]
        server: String,
    },
    /// Print the bibliography, committed entries and tentative ones.
    Bibliography {
        /// The replica to read from.
        #[arg(long, default_value = "127.0.0.1:7001")]
        server: String,
    },
}

pub(crate) fn connect(server: &str) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://{server}/"))
        .with_context(|| format!("bad server address {server:?}"))?;
    client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {server}"))
}

fn submit(server: &str, write: bayou_core::BayouWrite) -> anyhow::Result<String> {
    let mut con = connect(server)?;
    let id: String = redis::cmd("BAYOU.WRITE")
        .arg(write.to_json())
        .query(&mut con)
        .with_context(|| format!("BAYOU.WRITE at {server}"))?;
    Ok(id)
}

fn scan(
    con: &mut redis::Connection,
    prefix: &str,
    view: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let flat: Vec<String> = redis::cmd("BAYOU.SCAN")
        .arg(prefix)
        .arg(view)
        .query(con)
        .with_context(|| format!("BAYOU.SCAN {prefix} {view}"))?;
    Ok(flat
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
        .collect())
}

/// Runs an application command.
pub fn run(cmd: AppCmd) -> anyhow::Result<()> {
    match cmd {
        AppCmd::Meeting {
            server,
            name,
            room,
            hours,
            times,
        } => {
            let mut slots = Vec::new();
            for t in &times {
                let Some((d, h)) = t.split_once('/') else {
                    bail!("time {t:?} is not DAY/HOUR");
                };
                let (Ok(day), Ok(hour)) = (d.parse(), h.parse()) else {
                    bail!("time {t:?} is not DAY/HOUR");
                };
                slots.push(meeting::Slot { day, hour });
            }
            let preferred = slots.remove(0);
            let write = meeting::Request {
                name,
                room,
                hours,
                preferred,
                alternates: slots,
            }
            .to_write()?;
            let id = submit(&server, write)?;
            println!("accepted as write {id} (tentative until the primary commits it)");
        }
        AppCmd::Bib { server, key, title } => {
            let write = bib::add_entry(&key, &title.join(" "))?;
            let id = submit(&server, write)?;
            println!("accepted as write {id} (tentative until the primary commits it)");
        }
        AppCmd::Schedule { server } => {
            let mut con = connect(&server)?;
            let committed = scan(&mut con, "meeting/", "COMMITTED")?;
            let full = scan(&mut con, "meeting/", "FULL")?;
            println!(
                "{:<16} {:<8} {:>5} {:>5} {:>5}  status",
                "meeting", "room", "day", "hour", "hours"
            );
            for (k, v) in &full {
                let name = k.trim_start_matches("meeting/");
                let status = if committed.contains(&(k.clone(), v.clone())) {
                    "committed"
                } else {
                    "tentative"
                };
                match meeting::parse_booking(name, v) {
                    Some(b) => println!(
                        "{:<16} {:<8} {:>5} {:>5} {:>5}  {status}",
                        b.name, b.room, b.day, b.hour, b.hours
                    ),
                    None => println!("{name:<16} {v}  {status}"),
                }
            }
            for (k, v) in scan(&mut con, "errorlog/", "FULL")? {
                println!(
                    "{:<16} no time fits ({v})",
                    k.trim_start_matches("errorlog/")
                );
            }
        }
        AppCmd::Bibliography { server } => {
            let mut con = connect(&server)?;
            let committed = scan(&mut con, "bib/", "COMMITTED")?;
            for (k, v) in scan(&mut con, "bib/", "FULL")? {
                let status = if committed.contains(&(k.clone(), v.clone())) {
                    "committed"
                } else {
                    "tentative"
                };
                println!("{:<12} {v}  ({status})", k.trim_start_matches("bib/"));
            }
        }
    }
    Ok(())
}
