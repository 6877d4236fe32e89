//! The applications of the Bayou paper ([T95 §2]), as templates that build
//! Bayou writes (update + dependency check + merge procedure, [T95 §4]).
//!
//! As in Bayou, the application lives at the client: it instantiates a write
//! template per request, with the request's data embedded in the scripts, and
//! submits the write to any server. The servers know nothing of meetings or
//! papers; they run the scripts.
//!
//! * [`meeting`]: the meeting-room scheduler. A request names a room, a
//!   length and a preferred time plus alternates; the dependency check asks
//!   whether the preferred slots are free; the merge procedure books the
//!   first free alternate, or records the request in an error log when none
//!   fits ([T95 Fig. 3]).
//! * [`bib`]: the bibliographic database. An entry asks for a key such as
//!   `Jones95`; if another paper holds it, the merge procedure picks the
//!   first free suffix (`Jones95b`, `Jones95c`, …); if the same paper is
//!   already there under any key, the second entry merges into it.

#![warn(missing_docs, unreachable_pub)]

use bayou_core::{BayouWrite, DependencyCheck, Mutation};

/// A request that cannot be turned into a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// A name with characters outside letters, digits, `-`, `_` and `.`.
    #[error("{what} {value:?} may hold only letters, digits, '-', '_' and '.'")]
    BadName {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A field outside its range.
    #[error("{0}")]
    OutOfRange(String),
}

fn check_name(what: &'static str, value: &str) -> Result<(), AppError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AppError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

/// Quotes a checked name as a script string literal.
fn lit(s: &str) -> String {
    format!("\"{s}\"")
}

pub mod meeting {
    //! The meeting-room scheduler ([T95 §2.1, Fig. 3]).
    //!
    //! The database holds, per booked hour, `room/<room>/<day>/<hour>` = the
    //! meeting's name, and per scheduled meeting `meeting/<name>` =
    //! `<room> <day> <hour> <hours>`. A request that fits nowhere, or names a
    //! meeting that is already scheduled, is recorded as `errorlog/<name>` =
    //! why.

    use super::*;

    /// A day and an hour.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Slot {
        /// Day number (1–366).
        pub day: u32,
        /// Starting hour (0–23).
        pub hour: u32,
    }

    /// A meeting request: a preferred time and alternates, in order of
    /// preference.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Request {
        /// The meeting's name: a second request of a name already scheduled
        /// goes to the error log.
        pub name: String,
        /// The room.
        pub room: String,
        /// Length in whole hours.
        pub hours: u32,
        /// The preferred time.
        pub preferred: Slot,
        /// Acceptable alternates, tried in order by the merge procedure.
        pub alternates: Vec<Slot>,
    }

    /// The key of one booked hour.
    pub fn slot_key(room: &str, day: u32, hour: u32) -> String {
        format!("room/{room}/{day}/{hour}")
    }

    /// The key of a scheduled meeting.
    pub fn meeting_key(name: &str) -> String {
        format!("meeting/{name}")
    }

    /// The key of a request that fit nowhere.
    pub fn error_key(name: &str) -> String {
        format!("errorlog/{name}")
    }

    impl Request {
        fn validate(&self) -> Result<(), AppError> {
            check_name("meeting name", &self.name)?;
            check_name("room", &self.room)?;
            if !(1..=8).contains(&self.hours) {
                return Err(AppError::OutOfRange(format!(
                    "a meeting lasts 1 to 8 hours, not {}",
                    self.hours
                )));
            }
            for s in std::iter::once(&self.preferred).chain(&self.alternates) {
                if !(1..=366).contains(&s.day) || s.hour + self.hours > 24 {
                    return Err(AppError::OutOfRange(format!(
                        "day {} hour {} for {} hours is not within one day of the year",
                        s.day, s.hour, self.hours
                    )));
                }
            }
            if self.alternates.len() > 16 {
                return Err(AppError::OutOfRange("at most 16 alternates".into()));
            }
            Ok(())
        }

        /// The Bayou write for this request ([T95 Fig. 3]).
        pub fn to_write(&self) -> Result<BayouWrite, AppError> {
            self.validate()?;
            let Slot { day, hour } = self.preferred;
            let mut update: Vec<Mutation> = (hour..hour + self.hours)
                .map(|h| Mutation::Put(slot_key(&self.room, day, h), self.name.clone()))
                .collect();
            update.push(Mutation::Put(
                meeting_key(&self.name),
                format!("{} {day} {hour} {}", self.room, self.hours),
            ));
            // No meeting of this name is scheduled yet and the preferred
            // hours are all free. Without the first part a second request of
            // the same name would overwrite `meeting/<name>` and leave the
            // first one's hours booked by nobody (found by the
            // `bayou_scenario` fuzz target).
            let query = std::iter::once(format!("exists({})", lit(&meeting_key(&self.name))))
                .chain(
                    (hour..hour + self.hours)
                        .map(|h| format!("exists({})", lit(&slot_key(&self.room, day, h)))),
                )
                .collect::<Vec<_>>()
                .join(" || ");
            let alternates = self
                .alternates
                .iter()
                .map(|s| format!("[{}, {}]", s.day, s.hour))
                .collect::<Vec<_>>()
                .join(", ");
            let merge = format!(
                r#"let name = {name};
let room = {room};
let len = {len};
if exists(`meeting/${{name}}`) {{
    put(`errorlog/${{name}}`, `${{name}} is already scheduled`);
    return;
}}
for a in [{alternates}] {{
    let free = true;
    for h in a[1]..(a[1] + len) {{
        if exists(`room/${{room}}/${{a[0]}}/${{h}}`) {{ free = false; }}
    }}
    if free {{
        for h in a[1]..(a[1] + len) {{ put(`room/${{room}}/${{a[0]}}/${{h}}`, name); }}
        put(`meeting/${{name}}`, `${{room}} ${{a[0]}} ${{a[1]}} ${{len}}`);
        return;
    }}
}}
put(`errorlog/${{name}}`, `no free time for ${{room}} ${{len}}h`);
"#,
                name = lit(&self.name),
                room = lit(&self.room),
                len = self.hours,
            );
            Ok(BayouWrite {
                update,
                check: Some(DependencyCheck {
                    query,
                    expected: "false".into(),
                }),
                merge: Some(merge),
                label: Some(format!(
                    "MEETING({},{},{}/{},{}h)",
                    self.name, self.room, day, hour, self.hours
                )),
            })
        }
    }

    /// A meeting as the database records it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Booking {
        /// The meeting's name.
        pub name: String,
        /// The room.
        pub room: String,
        /// The day.
        pub day: u32,
        /// The first hour.
        pub hour: u32,
        /// The length in hours.
        pub hours: u32,
    }

    /// Parses a `meeting/<name>` record.
    pub fn parse_booking(name: &str, value: &str) -> Option<Booking> {
        let mut parts = value.split(' ');
        let room = parts.next()?.to_string();
        let day = parts.next()?.parse().ok()?;
        let hour = parts.next()?.parse().ok()?;
        let hours = parts.next()?.parse().ok()?;
        parts.next().is_none().then(|| Booking {
            name: name.to_string(),
            room,
            day,
            hour,
            hours,
        })
    }

    /// Checks a database: every scheduled meeting holds each of its hours,
    /// and every booked hour belongs to a scheduled meeting covering it. So
    /// no room is booked twice for one slot. Returns what is wrong.
    pub fn check_schedule<'a>(
        entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<usize, String> {
        use std::collections::BTreeMap;
        let mut bookings = BTreeMap::new();
        let mut slots = BTreeMap::new();
        for (k, v) in entries {
            let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
            if let Some(name) = k.strip_prefix("meeting/") {
                let b = parse_booking(name, &v)
                    .ok_or_else(|| format!("malformed meeting record {k} = {v:?}"))?;
                bookings.insert(name.to_string(), b);
            } else if k.starts_with("room/") {
                slots.insert(k.to_string(), v.to_string());
            }
        }
        let mut owned = 0;
        for b in bookings.values() {
            for h in b.hour..b.hour + b.hours {
                let key = slot_key(&b.room, b.day, h);
                match slots.get(&key) {
                    Some(holder) if holder == &b.name => owned += 1,
                    Some(holder) => {
                        return Err(format!(
                            "double booking: {} is scheduled in {key}, which {holder} holds",
                            b.name
                        ));
                    }
                    None => return Err(format!("{} is scheduled but {key} is free", b.name)),
                }
            }
        }
        if owned != slots.len() {
            return Err(format!(
                "{} booked hours belong to no scheduled meeting",
                slots.len() - owned
            ));
        }
        Ok(bookings.len())
    }
}

pub mod bib {
    //! The bibliographic database ([T95 §2.2, §4.1]).
    //!
    //! Entries live at `bib/<key>` = the paper's title. Keys are the first
    //! author's name and the year (`Jones95`), with a suffix when taken.

    use super::*;

    /// The suffixes tried, in order, for a key that is taken.
    pub const SUFFIXES: &str = "bcdefghijklmnopqrstuvwxyz";

    /// The key of an entry.
    pub fn entry_key(key: &str) -> String {
        format!("bib/{key}")
    }

    /// The Bayou write that adds the paper `title` under `key` (e.g.
    /// `Jones95`): the dependency check asks that the key is free and the
    /// paper is not there yet; the merge procedure drops a duplicate or picks
    /// the first free suffix.
    pub fn add_entry(key: &str, title: &str) -> Result<BayouWrite, AppError> {
        check_name("key", key)?;
        if title.is_empty()
            || title.len() > 200
            || !title.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            || title.contains(['"', '\\', '`', '$'])
        {
            return Err(AppError::OutOfRange(format!(
                "a title is 1-200 printable ASCII characters without quotes, backslashes, backquotes or '$': {title:?}"
            )));
        }
        let k = lit(&entry_key(key));
        let t = lit(title);
        let query = format!(
            r#"let ok = !exists({k});
for e in scan("bib/") {{ if e[1] == {t} {{ ok = false; }} }}
ok"#
        );
        let merge = format!(
            r#"for e in scan("bib/") {{ if e[1] == {t} {{ return; }} }}
for s in [{suffixes}] {{
    let key = {k} + s;
    if !exists(key) {{ put(key, {t}); return; }}
}}
put("errorlog/" + {k}, {t});
"#,
            suffixes = SUFFIXES
                .chars()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(BayouWrite {
            update: vec![Mutation::Put(entry_key(key), title.to_string())],
            check: Some(DependencyCheck {
                query,
                expected: "true".into(),
            }),
            merge: Some(merge),
            label: Some(format!("BIB({key},{title})")),
        })
    }
}
