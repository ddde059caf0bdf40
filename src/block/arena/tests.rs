use super::*;

/// Takes a slot as [`take`] does, mapping made-up chunks (counted in `mapped`).
fn take_slot(chunks: &mut Chunks, mapped: &mut usize) -> usize {
    chunks.take().unwrap_or_else(|| {
        *mapped += 1;
        chunks.take_from_new(*mapped * CHUNK)
    })
}

fn take_slots(chunks: &mut Chunks, mapped: &mut usize, count: usize) -> Vec<usize> {
    (0..count).map(|_| take_slot(chunks, mapped)).collect()
}

fn base_of(addr: usize) -> usize {
    addr & !(CHUNK - 1)
}

#[test]
fn slots_fill_a_chunk_before_the_next_is_mapped() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let addrs = take_slots(&mut chunks, &mut mapped, SLOTS + 1);
    assert_eq!(mapped, 2);
    assert!(addrs[..SLOTS].iter().all(|a| base_of(*a) == CHUNK));
    assert_eq!(base_of(addrs[SLOTS]), 2 * CHUNK);
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), addrs.len(), "no slot is handed out twice");
    assert!(addrs.iter().all(|a| a % BLOCK_SIZE == 0));
    assert_eq!(chunks.free_slots, SLOTS - 1);
}

#[test]
fn the_chunk_with_the_fewest_free_slots_is_taken_from_first() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let addrs = take_slots(&mut chunks, &mut mapped, 2 * SLOTS);
    // The first chunk (lower address) gets three slots free, the second one.
    for addr in [addrs[0], addrs[1], addrs[2], addrs[SLOTS + 1]] {
        assert!(chunks.give_back(addr).is_empty(), "under the kept slots");
    }
    assert_eq!(take_slot(&mut chunks, &mut mapped), addrs[SLOTS + 1]);
    assert_eq!(base_of(take_slot(&mut chunks, &mut mapped)), CHUNK);
    assert_eq!(mapped, 2);
}

#[test]
fn empty_chunks_go_back_past_the_kept_slots_and_no_other() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let count = KEPT_FREE + 3 * SLOTS;
    let addrs = take_slots(&mut chunks, &mut mapped, count);
    // One slot of the first chunk stays in use throughout.
    let unmapped: Vec<usize> = addrs[1..]
        .iter()
        .flat_map(|a| chunks.give_back(*a))
        .collect();
    assert!(!unmapped.contains(&CHUNK), "a chunk with a slot in use");
    assert!(chunks.free_slots <= KEPT_FREE, "{}", chunks.free_slots);
    assert_eq!(chunks.free_slots + unmapped.len() * SLOTS, count - 1);
    assert!(unmapped
        .iter()
        .all(|b| !chunks.partly.contains_key(b) && !chunks.empty.contains(b)));
    // What is kept is taken again before anything new is mapped.
    let kept = chunks.free_slots;
    take_slots(&mut chunks, &mut mapped, kept);
    assert_eq!(mapped, count / SLOTS);
}

#[test]
#[should_panic(expected = "freed twice")]
fn a_slot_freed_twice_is_caught() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let addrs = take_slots(&mut chunks, &mut mapped, 2);
    chunks.give_back(addrs[0]);
    chunks.give_back(addrs[0]);
}

#[test]
#[should_panic(expected = "not ours")]
fn a_slot_of_a_chunk_gone_back_is_caught() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let count = KEPT_FREE + 2 * SLOTS;
    let addrs = take_slots(&mut chunks, &mut mapped, count);
    let unmapped: Vec<usize> = addrs.iter().flat_map(|a| chunks.give_back(*a)).collect();
    let gone = *unmapped
        .first()
        .expect("a chunk went back past the kept slots");
    // Its slot, given back again: the chunk must not come back into the lists.
    chunks.give_back(gone);
}

#[test]
#[should_panic(expected = "not ours")]
fn a_slot_of_a_chunk_never_mapped_is_caught() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    take_slots(&mut chunks, &mut mapped, 1);
    chunks.give_back(7 * CHUNK + BLOCK_SIZE);
}

#[test]
fn the_fullest_chunk_is_the_first_found_with_one_free_slot() {
    let (mut chunks, mut mapped) = (Chunks::new(), 0);
    let addrs = take_slots(&mut chunks, &mut mapped, 3 * SLOTS);
    // Chunk one gets two slots free, chunk two one, chunk three one.
    for addr in [addrs[0], addrs[1], addrs[SLOTS], addrs[2 * SLOTS]] {
        chunks.give_back(addr);
    }
    assert_eq!(
        chunks.fullest(),
        Some(2 * CHUNK),
        "the first with one free slot"
    );
}

#[test]
fn a_mapped_chunk_is_aligned_zeros_and_writable() {
    let base = map_chunk();
    assert_eq!(base % CHUNK, 0);
    // SAFETY: the chunk is CHUNK bytes mapped for us alone.
    let chunk = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, CHUNK) };
    assert!(chunk.iter().all(|b| *b == 0));
    chunk.fill(1);
    // SAFETY: mapped by map_chunk, and the slice is not used again.
    assert_eq!(unsafe { libc::munmap(base as *mut libc::c_void, CHUNK) }, 0);
}

#[test]
fn slots_taken_at_once_do_not_overlap() {
    let slots: Vec<NonNull<u8>> = (0..2 * SLOTS + 1).map(|_| take()).collect();
    for (i, slot) in slots.iter().enumerate() {
        // SAFETY: each slot is BLOCK_SIZE bytes of ours.
        unsafe { slot.as_ptr().write_bytes(i as u8, BLOCK_SIZE) };
    }
    for (i, slot) in slots.iter().enumerate() {
        // SAFETY: as above; written just now.
        let data = unsafe { std::slice::from_raw_parts(slot.as_ptr(), BLOCK_SIZE) };
        assert!(
            data.iter().all(|b| *b == i as u8),
            "slot {i} was overwritten"
        );
    }
    // SAFETY: nothing refers to them any more.
    slots
        .into_iter()
        .for_each(|slot| unsafe { give_back(slot) });
}
