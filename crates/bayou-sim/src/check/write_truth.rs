//! Write truth ([T95 §8]; issue 15, signed writes): no server's log ever
//! holds a write whose author or operation differs from what its accepting
//! server accepted (and signed), nor a write no server accepted. A relay
//! that changes a write on the way must be refused where the write
//! arrives; this checker is what notices if it is not.

use std::collections::BTreeMap;
use std::sync::Arc;

use bayou_core::{Op, Replica, WriteId, format_entry};

/// What each accepting server accepted: the author and operation of every
/// client write, by id.
pub type Accepted = BTreeMap<WriteId, (Option<Arc<str>>, Op)>;

/// Every write in `replica`'s log is one its accepting server accepted,
/// with the same author and operation.
pub fn write_truth(replica: &Replica, accepted: &Accepted) -> Result<(), String> {
    for (csn, w) in replica.log() {
        match accepted.get(&w.id) {
            Some((author, op)) if *author == w.author && *op == w.op => {}
            Some((author, op)) => {
                let mut real = w.clone();
                real.author = author.clone();
                real.op = op.clone();
                return Err(format!(
                    "write truth violated at {}: its log holds {} but {} accepted {}",
                    replica.id(),
                    format_entry(csn, &w),
                    w.id.server,
                    format_entry(csn, &real)
                ));
            }
            None => {
                return Err(format!(
                    "write truth violated at {}: its log holds {}, which {} never accepted",
                    replica.id(),
                    format_entry(csn, &w),
                    w.id.server
                ));
            }
        }
    }
    Ok(())
}
