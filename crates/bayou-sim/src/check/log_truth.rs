//! Log truth ([T95 §5, §7]; [P97 §3.3]): "the ordered update log is the
//! truth", and once the log is truncated, the checkpoint plus the log is:
//! the committed view equals the database of the last checkpoint the server
//! issued (taken, installed by a full-state transfer, or recovered from)
//! followed by a replay of the retained committed writes after it, and the
//! full view continues with the tentative writes. So rollback, redo,
//! truncation and installs never drift from it.

use bayou_core::{Checkpoint, Db, Replica, ServerId, VersionVector, View};

/// What a store holds after writing checkpoint `cp` incrementally (only the
/// keys it lists as changed, over the previous one) is exactly `cp`'s
/// database, so recovery starts from the truth ([P97 §3.3]).
pub fn stored_image(server: &ServerId, image: &Db, cp: &Checkpoint) -> Result<(), String> {
    if image != &*cp.snapshot.db {
        return Err(format!(
            "log truth violated at {server}: after writing the checkpoint of CSN {} the disk holds {image:?}, but the checkpoint's database is {:?}",
            cp.snapshot.csn, cp.snapshot.db
        ));
    }
    Ok(())
}

/// Each view equals the last checkpoint's database plus a fresh execution
/// of the retained log after it ([T95 §5, §7], [P97 §3.3]). `checkpoint` is
/// the newest checkpoint `replica` issued, durable or not.
pub fn log_is_truth(replica: &Replica, checkpoint: Option<&Checkpoint>) -> Result<(), String> {
    let id = replica.id();
    let empty = VersionVector::new();
    let (cp_csn, cp_osn, cp_omitted) = match checkpoint {
        Some(cp) => (cp.snapshot.csn, cp.osn, &cp.omitted),
        None => (0, 0, &empty),
    };
    // The truncation point is the one the checkpoint recorded: writes are
    // discarded only at a checkpoint ([P97 §3.3]).
    if replica.osn() != cp_osn || replica.omitted() != cp_omitted {
        return Err(format!(
            "log truth violated at {id}: OSN {} and O {:?}, but its last checkpoint has OSN {cp_osn} and O {cp_omitted:?}",
            replica.osn(),
            replica.omitted()
        ));
    }
    if cp_csn > replica.csn() {
        return Err(format!(
            "log truth violated at {id}: its checkpoint reflects CSN {cp_csn} but it knows only CSN {}",
            replica.csn()
        ));
    }
    let mut committed: Db = checkpoint
        .map(|cp| (*cp.snapshot.db).clone())
        .unwrap_or_default();
    for (csn, w) in replica.committed() {
        if csn > cp_csn {
            // By id and CSN: membership writes need both ([P97 §4.3]).
            committed.execute_write(&w.id, &w.op, Some(csn));
        }
    }
    if &committed != replica.db(View::Committed) {
        return Err(format!(
            "log truth violated at {id}: committed view {:?} but its checkpoint (CSN {cp_csn}) plus the retained committed log gives {:?}",
            replica.db(View::Committed),
            committed
        ));
    }
    // The full view continues from the committed state with the tentative writes.
    let mut full = committed;
    for (_, w) in replica.log().skip(replica.retained_len()) {
        full.execute_write(&w.id, &w.op, None);
    }
    if &full != replica.db(View::Full) {
        return Err(format!(
            "log truth violated at {id}: full view {:?} but replaying the log gives {:?}",
            replica.db(View::Full),
            full
        ));
    }
    Ok(())
}
