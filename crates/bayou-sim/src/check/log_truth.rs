//! Log truth ([T95 §5, §7]): "the ordered update log is the truth": each
//! view equals a fresh execution of the log in order, so rollback and redo
//! never drift from it.

use bayou_core::{Db, Replica, View};

/// Each view equals a fresh execution of the log ([T95 §5, §7]).
pub fn log_is_truth(replica: &Replica) -> Result<(), String> {
    let mut committed = Db::new();
    for w in replica.committed() {
        committed.execute(&w.op);
    }
    if &committed != replica.db(View::Committed) {
        return Err(format!(
            "log truth violated at {}: committed view {:?} but replaying the committed log gives {:?}",
            replica.id(),
            replica.db(View::Committed),
            committed
        ));
    }
    // The full view continues from the committed prefix with the tentative writes.
    let mut full = committed;
    for (_, w) in replica.log().skip(replica.committed().len()) {
        full.execute(&w.op);
    }
    if &full != replica.db(View::Full) {
        return Err(format!(
            "log truth violated at {}: full view {:?} but replaying the log gives {:?}",
            replica.id(),
            replica.db(View::Full),
            full
        ));
    }
    Ok(())
}
