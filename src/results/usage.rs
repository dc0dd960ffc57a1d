//! What is stored, as each replica knows it: a ledger of every result the index names (its state, its bytes
//! once committed, the value of the budget label), which GetUsage, the byte budget and the gauges read from
//! memory. `refresh.rs` fills it from storage: whole at start-up (and every [`FULL_READ_EVERY`]), and in
//! between every `usage_interval` from the change journal, reading only what changed.
//!
//! What this replica does itself it notes at once ([`Ledger::note`]); what other replicas do, it learns at its
//! next refresh. A note only moves a result forward (allocated, then committed or aborted, then being
//! deleted, then gone), so a refresh that read a folder just before this replica changed it cannot undo the
//! note for long: the change's journal entry brings the folder back at the next refresh.
//!
//! Memory: about a hundred bytes a result stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{ResultId, ResultState, Timestamp};

/// How often the ledger is read whole again, whatever the journal says: what a lost journal entry (a crash
/// between a deletion and its entry) left wrong lasts no longer.
pub const FULL_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How many values of the budget label GetUsage reports, the fullest first.
pub const MAX_LABELS_REPORTED: usize = 100;

/// A result, by when it was created and its id: the order of the index.
pub type Key = (Timestamp, ResultId);

/// Results and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub results: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.results = self.results.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn remove(&mut self, bytes: u64) {
        self.results = self.results.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The value of the budget label a result carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Label {
    /// Not read yet (or no budget label is configured).
    Unread,
    /// The result carries no such label.
    Absent,
    Value(Box<str>),
}

impl Label {
    fn value(&self) -> Option<&str> {
        match self {
            Self::Value(value) => Some(value),
            Self::Unread | Self::Absent => None,
        }
    }
}

/// What the ledger knows of one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// ALLOCATED, COMMITTED, ABORTED, or EXPIRED while it is being deleted.
    pub state: ResultState,
    /// Its committed bytes (none before its commit, or once aborted).
    pub bytes: u64,
    pub label: Label,
}

/// The states in the order a result goes through them.
const STATES: [ResultState; 4] =
    [ResultState::Allocated, ResultState::Committed, ResultState::Aborted, ResultState::Expired];

/// Where `state` stands in [`STATES`] (committed and aborted are one step: a result takes one of the two).
fn step(state: ResultState) -> u8 {
    match state {
        ResultState::Allocated => 0,
        ResultState::Committed | ResultState::Aborted => 1,
        ResultState::Expired => 2,
    }
}

fn slot(state: ResultState) -> usize {
    STATES.iter().position(|known| *known == state).unwrap_or(0)
}

/// The ledger of one replica.
#[derive(Debug, Default)]
pub struct Ledger {
    results: BTreeMap<Key, Tracked>,
    by_state: [Tally; STATES.len()],
    /// Committed results by the value of the budget label.
    by_label: HashMap<Box<str>, Tally>,
    /// What this replica noted while a refresh was reading storage, applied again after it.
    noted_meanwhile: Option<Vec<(Key, Option<Tracked>)>>,
    /// The journal entries read within the look-back, not to be read again.
    pub seen: BTreeSet<String>,
    /// The journal is read from here (less the look-back) at the next refresh.
    pub cursor: Option<Timestamp>,
    /// When the ledger was last read whole.
    pub read_whole_at: Option<Timestamp>,
}

impl Ledger {
    /// Whether the ledger has been read from storage once.
    pub fn loaded(&self) -> bool {
        self.cursor.is_some()
    }

    #[cfg(test)]
    pub fn get(&self, key: &Key) -> Option<&Tracked> {
        self.results.get(key)
    }

    /// Sets what storage says of `key` (`None`: nothing, it is gone).
    pub fn put(&mut self, key: Key, tracked: Option<Tracked>) {
        let old = match tracked {
            Some(tracked) => {
                self.count(&tracked, true);
                self.results.insert(key, tracked)
            }
            None => self.results.remove(&key),
        };
        if let Some(old) = old {
            self.count(&old, false);
        }
    }

    /// What this replica just did to `key` (`None`: deleted it): taken only if it moves the result forward.
    pub fn note(&mut self, key: Key, tracked: Option<Tracked>) {
        if let Some(meanwhile) = &mut self.noted_meanwhile {
            meanwhile.push((key.clone(), tracked.clone()));
        }
        let forward = match (self.results.get(&key), &tracked) {
            (_, None) | (None, Some(_)) => true,
            (Some(old), Some(new)) => step(new.state) > step(old.state),
        };
        if forward {
            // What the note does not say (a label unread, bytes unknown to a deletion) stays as known.
            let tracked = tracked.map(|mut tracked| {
                if let Some(old) = self.results.get(&key) {
                    if tracked.label == Label::Unread {
                        tracked.label = old.label.clone();
                    }
                    if tracked.bytes == 0 {
                        tracked.bytes = old.bytes;
                    }
                }
                tracked
            });
            self.put(key, tracked);
        }
    }

    /// Results this replica just deleted.
    pub fn forget(&mut self, gone: impl IntoIterator<Item = Key>) {
        for key in gone {
            self.note(key, None);
        }
    }

    /// A refresh begins reading storage: notes from now on are kept, to be applied again after it.
    pub fn begin_refresh(&mut self) {
        self.noted_meanwhile = Some(Vec::new());
    }

    /// A refresh read storage and failed: nothing changes.
    pub fn abandon_refresh(&mut self) {
        self.noted_meanwhile = None;
    }

    /// A refresh read what storage says of `changed` (results in it missing from `read` are gone), as of
    /// `at`; the notes taken meanwhile are applied again.
    pub fn end_refresh(&mut self, read: BTreeMap<Key, Tracked>, changed: impl IntoIterator<Item = Key>, at: Timestamp) {
        let mut read = read;
        for key in changed {
            let tracked = read.remove(&key).map(|tracked| self.carry_label(&key, tracked));
            self.put(key, tracked);
        }
        self.cursor = Some(at);
        self.replay();
    }

    /// A refresh read the whole index (`read`), as of `at`: the ledger is replaced.
    pub fn end_whole_read(&mut self, read: BTreeMap<Key, Tracked>, at: Timestamp) {
        let mut fresh = Ledger::default();
        for (key, tracked) in read {
            let tracked = self.carry_label(&key, tracked);
            fresh.put(key, Some(tracked));
        }
        (self.results, self.by_state, self.by_label) = (fresh.results, fresh.by_state, fresh.by_label);
        (self.cursor, self.read_whole_at) = (Some(at), Some(at));
        self.replay();
    }

    /// `tracked` with the label already known of `key`, if it was not read.
    fn carry_label(&self, key: &Key, mut tracked: Tracked) -> Tracked {
        if let (Label::Unread, Some(known)) = (&tracked.label, self.results.get(key)) {
            tracked.label = known.label.clone();
        }
        tracked
    }

    fn replay(&mut self) {
        for (key, tracked) in self.noted_meanwhile.take().unwrap_or_default() {
            self.note(key, tracked);
        }
    }

    /// Whether `key`, as storage names it in `tracked`, still needs its label read.
    pub fn needs_label(&self, key: &Key, tracked: &Tracked) -> bool {
        tracked.state == ResultState::Committed
            && tracked.label == Label::Unread
            && self.results.get(key).is_none_or(|known| known.label == Label::Unread)
    }

    fn count(&mut self, tracked: &Tracked, add: bool) {
        let tally = &mut self.by_state[slot(tracked.state)];
        match add {
            true => tally.add(tracked.bytes),
            false => tally.remove(tracked.bytes),
        }
        if tracked.state != ResultState::Committed {
            return;
        }
        let Some(value) = tracked.label.value() else { return };
        match add {
            true => self.by_label.entry(value.into()).or_default().add(tracked.bytes),
            false => {
                if let Some(tally) = self.by_label.get_mut(value) {
                    tally.remove(tracked.bytes);
                    if tally.results == 0 {
                        self.by_label.remove(value);
                    }
                }
            }
        }
    }

    /// Results and bytes in `state`.
    pub fn in_state(&self, state: ResultState) -> Tally {
        self.by_state[slot(state)]
    }

    /// Committed results carrying `value` as the budget label.
    pub fn of_label(&self, value: &str) -> Tally {
        self.by_label.get(value).copied().unwrap_or_default()
    }

    /// The values of the budget label that committed results carry, the fullest first, at most `limit`, and
    /// how many there are.
    pub fn fullest_labels(&self, limit: usize) -> (Vec<(String, Tally)>, usize) {
        let mut labels: Vec<(&str, Tally)> = self.by_label.iter().map(|(value, tally)| (&**value, *tally)).collect();
        labels.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        let count = labels.len();
        (labels.into_iter().take(limit).map(|(value, tally)| (value.to_owned(), tally)).collect(), count)
    }

    /// The oldest committed results (of those carrying `label` as the budget label, if given) whose bytes
    /// reach `bytes`, marked as being deleted: what makes that much room.
    pub fn take_oldest(&mut self, label: Option<&str>, bytes: u64) -> Vec<Key> {
        let mut taken = Vec::new();
        let mut freed = 0u64;
        for (key, tracked) in &self.results {
            if freed >= bytes {
                break;
            }
            if tracked.state == ResultState::Committed && label.is_none_or(|label| tracked.label.value() == Some(label))
            {
                freed = freed.saturating_add(tracked.bytes);
                taken.push(key.clone());
            }
        }
        for key in &taken {
            if let Some(tracked) = self.results.get(key) {
                let deleting = Tracked { state: ResultState::Expired, ..tracked.clone() };
                self.note(key.clone(), Some(deleting));
            }
        }
        taken
    }

    /// The values of the budget label whose committed bytes exceed `max`, and by how much.
    pub fn labels_over(&self, max: u64) -> Vec<(String, u64)> {
        self.by_label
            .iter()
            .filter(|(_, tally)| tally.bytes > max)
            .map(|(value, tally)| (value.to_string(), tally.bytes - max))
            .collect()
    }

    /// How many results the ledger holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.results.len()
    }
}

#[cfg(test)]
mod tests;
