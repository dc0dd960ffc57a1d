use super::*;

fn key(ms: u64) -> Key {
    (Timestamp::from_millis(ms).unwrap(), ResultId::generate().unwrap())
}

fn tracked(state: ResultState, bytes: u64, label: Option<&str>) -> Option<Tracked> {
    let label = label.map_or(Label::Absent, |value| Label::Value(value.into()));
    Some(Tracked { state, bytes, label })
}

#[test]
fn tallies_follow_each_result_through_its_states() {
    let mut ledger = Ledger::default();
    let (a, b) = (key(1), key(2));
    ledger.put(a.clone(), tracked(ResultState::Allocated, 0, None));
    ledger.put(b.clone(), tracked(ResultState::Allocated, 0, None));
    assert_eq!(ledger.in_state(ResultState::Allocated), Tally { results: 2, bytes: 0 });
    ledger.put(a.clone(), tracked(ResultState::Committed, 10, Some("alice")));
    ledger.put(b.clone(), tracked(ResultState::Aborted, 0, Some("bob")));
    assert_eq!(ledger.in_state(ResultState::Allocated), Tally::default());
    assert_eq!(ledger.in_state(ResultState::Committed), Tally { results: 1, bytes: 10 });
    assert_eq!(ledger.in_state(ResultState::Aborted), Tally { results: 1, bytes: 0 });
    assert_eq!(ledger.of_label("alice"), Tally { results: 1, bytes: 10 });
    assert_eq!(ledger.of_label("bob"), Tally::default(), "an aborted result holds no budget");
    ledger.put(a.clone(), tracked(ResultState::Expired, 10, Some("alice")));
    assert_eq!(
        (ledger.in_state(ResultState::Committed), ledger.of_label("alice")),
        (Tally::default(), Tally::default())
    );
    assert_eq!(ledger.in_state(ResultState::Expired), Tally { results: 1, bytes: 10 });
    ledger.put(a, None);
    ledger.put(b, None);
    assert!(STATES.iter().all(|state| ledger.in_state(*state) == Tally::default()) && ledger.len() == 0);
}

#[test]
fn a_note_moves_a_result_forward_only_and_survives_the_refresh_it_overlapped() {
    let mut ledger = Ledger::default();
    let a = key(1);
    ledger.note(a.clone(), tracked(ResultState::Committed, 7, Some("alice")));
    ledger.note(a.clone(), tracked(ResultState::Allocated, 0, None));
    assert_eq!(ledger.get(&a).map(|t| t.state), Some(ResultState::Committed), "no step back");

    // A refresh read the folder while it was allocated; the commit noted meanwhile stands after it.
    let b = key(2);
    ledger.begin_refresh();
    ledger.note(b.clone(), tracked(ResultState::Committed, 5, Some("bob")));
    let read: BTreeMap<Key, Tracked> =
        [(b.clone(), tracked(ResultState::Allocated, 0, None).unwrap())].into_iter().collect();
    ledger.end_refresh(read, [b.clone()], Timestamp::from_millis(100).unwrap());
    assert_eq!(ledger.get(&b).map(|t| (t.state, t.bytes)), Some((ResultState::Committed, 5)));
    assert_eq!(ledger.of_label("bob").bytes, 5);
    assert!(ledger.loaded());

    // Deleted here while a whole read still listed it: gone after.
    ledger.begin_refresh();
    ledger.note(b.clone(), None);
    let read: BTreeMap<Key, Tracked> = [
        (a.clone(), Tracked { state: ResultState::Committed, bytes: 7, label: Label::Unread }),
        (b.clone(), tracked(ResultState::Committed, 5, Some("bob")).unwrap()),
    ]
    .into_iter()
    .collect();
    ledger.end_whole_read(read, Timestamp::from_millis(200).unwrap());
    assert!(ledger.get(&b).is_none());
    assert_eq!(ledger.get(&a).map(|t| t.label.clone()), Some(Label::Value("alice".into())), "the label carried over");
    assert_eq!(ledger.in_state(ResultState::Committed), Tally { results: 1, bytes: 7 });
}

#[test]
fn a_refresh_forgets_what_its_changes_no_longer_name() {
    let mut ledger = Ledger::default();
    let (a, b) = (key(1), key(2));
    ledger.put(a.clone(), tracked(ResultState::Committed, 3, None));
    ledger.put(b.clone(), tracked(ResultState::Committed, 4, None));
    ledger.begin_refresh();
    ledger.end_refresh(BTreeMap::new(), [a.clone()], Timestamp::from_millis(5).unwrap());
    assert!(ledger.get(&a).is_none() && ledger.get(&b).is_some());
    assert_eq!(ledger.in_state(ResultState::Committed), Tally { results: 1, bytes: 4 });
}

#[test]
fn the_oldest_committed_results_make_room_first() {
    let mut ledger = Ledger::default();
    let keys: Vec<Key> = (1..=5).map(key).collect();
    for (n, key) in keys.iter().enumerate() {
        let state = if n == 1 { ResultState::Aborted } else { ResultState::Committed };
        let label = if n % 2 == 0 { "alice" } else { "bob" };
        ledger.put(key.clone(), tracked(state, 10, Some(label)));
    }
    // alice: 0, 2, 4 (30 bytes); bob: 3 (10 bytes, 1 is aborted).
    assert_eq!(ledger.labels_over(15), vec![("alice".to_owned(), 15)]);
    assert_eq!(ledger.take_oldest(Some("alice"), 15), vec![keys[0].clone(), keys[2].clone()]);
    assert_eq!(ledger.of_label("alice").bytes, 10);
    assert_eq!(ledger.get(&keys[0]).map(|t| t.state), Some(ResultState::Expired));
    assert_eq!(ledger.take_oldest(None, 1), vec![keys[3].clone()], "the oldest still committed, any label");
    assert_eq!(ledger.in_state(ResultState::Committed), Tally { results: 1, bytes: 10 });
    assert_eq!(ledger.take_oldest(None, 0), Vec::<Key>::new());
}

#[test]
fn the_fullest_labels_come_first_and_are_bounded() {
    let mut ledger = Ledger::default();
    for n in 0..10u64 {
        ledger.put(key(n), tracked(ResultState::Committed, n, Some(&format!("user-{n}"))));
    }
    let (fullest, count) = ledger.fullest_labels(3);
    assert_eq!(count, 10);
    let names: Vec<&str> = fullest.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(names, ["user-9", "user-8", "user-7"]);
}

#[test]
fn extreme_sizes_saturate_instead_of_wrapping() {
    let mut ledger = Ledger::default();
    let (a, b) = (key(1), key(2));
    ledger.put(a.clone(), tracked(ResultState::Committed, u64::MAX, Some("x")));
    ledger.put(b, tracked(ResultState::Committed, u64::MAX, Some("x")));
    assert_eq!(ledger.in_state(ResultState::Committed).bytes, u64::MAX);
    ledger.put(a, None);
    assert_eq!(ledger.in_state(ResultState::Committed).results, 1);
}
