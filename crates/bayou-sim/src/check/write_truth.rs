//! Write truth ([T95 §8]; issue 15, signed writes): no server's log ever
//! holds a write whose author or operation differs from what its accepting
//! server accepted (and signed), nor a write no server accepted. A relay
//! that changes a write on the way must be refused where the write
//! arrives; this checker is what notices if it is not.

use std::collections::BTreeMap;
use std::sync::Arc;

use bayou_core::{Op, Replica, Write, WriteId, format_entry};

/// What each accepting server accepted: the author and operation of every
/// client write, by id.
pub type Accepted = BTreeMap<WriteId, (Option<Arc<str>>, Op)>;

/// Every write in `replica`'s log is one its accepting server accepted,
/// with the same author and operation. Walks the log by reference: it runs
/// after every step of every random run.
pub fn write_truth(replica: &Replica, accepted: &Accepted) -> Result<(), String> {
    let committed = replica
        .committed()
        .map(|(csn, w)| (Some(csn), &w.id, w.author.as_ref(), &w.op));
    let tentative = replica
        .tentative()
        .map(|(id, op)| (None, id, replica.tentative_author(id), op));
    for (csn, id, author, op) in committed.chain(tentative) {
        let held = || format_entry(csn, &Write::new(id.clone(), op.clone()).by(author.cloned()));
        match accepted.get(id) {
            Some((a, o)) if a.as_ref() == author && o == op => {}
            Some((a, o)) => {
                let real = Write::new(id.clone(), o.clone()).by(a.clone());
                return Err(format!(
                    "write truth violated at {}: its log holds {} but {} accepted {}",
                    replica.id(),
                    held(),
                    id.server,
                    format_entry(csn, &real)
                ));
            }
            None => {
                return Err(format!(
                    "write truth violated at {}: its log holds {}, which {} never accepted",
                    replica.id(),
                    held(),
                    id.server
                ));
            }
        }
    }
    Ok(())
}
