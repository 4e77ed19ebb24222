//! What one cached child costs in memory (issue 16, step 6): the cache entry as the caches held
//! it before (a metadata-only watch's `PartialObjectMeta`, trimmed) and as they hold it now
//! (`ChildMeta`), counted by a counting allocator on this test's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{Lookup, ObjectRef};
use serde_json::{Value, json};

use secure_qdrant_operator::reconcile::child_meta::ChildMeta;
use secure_qdrant_operator::reconcile::drift;

/// Counts the heap this thread holds while `ON` is set (other test threads are not counted).
struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    /// Bytes asked for, net.
    static BYTES: Cell<isize> = const { Cell::new(0) };
    /// Bytes glibc's malloc uses for them (8 bytes of header, 16-byte steps, 32 at least).
    static CHUNKS: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

fn chunk(size: usize) -> isize {
    (size + 8).div_ceil(16).max(2) as isize * 16
}

fn record(size: usize, sign: isize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            BYTES.with(|b| b.set(b.get() + sign * size as isize));
            CHUNKS.with(|c| c.set(c.get() + sign * chunk(size)));
            BLOCKS.with(|c| c.set(c.get() + sign));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting touches only
// const-initialised thread-locals without destructors (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 1);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(layout.size(), -1);
        record(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap a value made by `make` keeps: bytes asked for, bytes of malloc chunks, allocations. The
/// value is returned, so it is dropped after the count.
fn retained<T>(make: impl FnOnce() -> T) -> (T, [isize; 3]) {
    for c in [&BYTES, &CHUNKS, &BLOCKS] {
        c.with(|c| c.set(0));
    }
    ON.with(|on| on.set(true));
    let value = make();
    ON.with(|on| on.set(false));
    let counts = [&BYTES, &CHUNKS, &BLOCKS].map(|c| c.with(Cell::get));
    (value, counts)
}

/// The metadata of a managed child of instance 42 as a metadata-only watch delivers it
/// (the managed fields of the operator's apply included; the cache drops them).
fn watched(name: &str, component: &str) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {
            "name": name, "namespace": "tenant-0042",
            "uid": "0b6f1a8e-3f7c-4a51-9d0e-6f1c2b7a9e42", "resourceVersion": "1048576",
            "creationTimestamp": "2026-12-05T10:00:00Z",
            "labels": {
                "app.kubernetes.io/name": "qdrant",
                "app.kubernetes.io/instance": "vectors-0042",
                "app.kubernetes.io/managed-by": "secure-qdrant-operator",
                "app.kubernetes.io/component": component,
            },
            "annotations": {"secureqdrant.dev/applied-hash": "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"},
            "ownerReferences": [{
                "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
                "name": "vectors-0042", "uid": "5e1d7c3b-9a8f-4e6d-b2c1-0a9f8e7d6c42",
                "controller": true, "blockOwnerDeletion": true,
            }],
            "managedFields": [{
                "manager": "secure-qdrant-operator", "operation": "Apply",
                "apiVersion": "v1", "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}},
                    "f:annotations": {"f:secureqdrant.dev/applied-hash": {}}},
                    "f:spec": {"f:ports": {"k:{\"port\":6333,\"protocol\":\"TCP\"}": {}}}},
            }],
        },
    })
}

/// One cache entry: the store's key and its shared object.
fn entry<C: Lookup<DynamicType = ()> + Clone>(c: &C) -> (ObjectRef<C>, Arc<C>) {
    (ObjectRef::from_obj(c), Arc::new(c.clone()))
}

/// (before, after) in bytes for one cached object of kind `K`, printed.
fn footprint<K>(object: Value) -> (isize, isize)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut watched: PartialObjectMeta<K> = serde_json::from_value(object).expect("metadata");
    // As the caches trim each object before keeping it.
    drift::mark_and_trim(&mut watched.metadata);
    // The map slot of an entry (the map itself is sized to the number of objects).
    let slot = |key: usize, value: usize| (key + value) as isize;
    let before_slot = slot(
        size_of::<ObjectRef<PartialObjectMeta<K>>>(),
        size_of::<Arc<PartialObjectMeta<K>>>(),
    );
    let after_slot = slot(
        size_of::<ObjectRef<ChildMeta<K>>>(),
        size_of::<Arc<ChildMeta<K>>>(),
    );
    let (old, [old_bytes, old_chunks, old_blocks]) = retained(|| entry(&watched));
    let (new, [new_bytes, new_chunks, new_blocks]) =
        retained(|| entry(&ChildMeta::<K>::from(&watched)));
    assert_eq!(new.1.name(), old.1.name_any());
    let (before, after) = (old_chunks + before_slot, new_chunks + after_slot);
    println!(
        "one cached {}: before {before} B ({old_blocks} allocations, {old_bytes} B asked, + a \
         {before_slot} B map slot), after {after} B ({new_blocks} allocations, {new_bytes} B \
         asked, + a {after_slot} B slot)",
        K::kind(&())
    );
    (before, after)
}

/// Run with `--nocapture` for the figures (BENCHMARKS.md, issue 16 step 6).
#[test]
fn a_cached_child_costs_a_fifth_of_its_watched_metadata() {
    for (before, after) in [
        footprint::<Service>(watched("vectors-0042-client", "database")),
        footprint::<Secret>(watched("vectors-0042-tls", "database")),
    ] {
        assert!(after * 5 <= before, "before {before} B, after {after} B");
        assert!(after <= 600, "{after} B per cached child");
    }
}
