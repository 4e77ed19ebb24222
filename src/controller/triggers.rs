//! Reconcile requests one controller hands another from a watch they share.
//!
//! The token controller's triggers (an instance, one of the operator's Secrets, a Secret a user
//! lets an instance use) are read from the SecureQdrant controller's watches, so the operator
//! opens one watch per kind and label selector. The watch's consumer maps each object to the
//! tokens it concerns and [`Sender::send`]s them; the token controller reads [`Requests`]
//! (`Controller::reconcile_on`).
//!
//! kube-runtime's own shared streams (`reflect_shared`, `Writer::subscribe`) do not fit: they
//! never pass on a deletion, feed only a `Writer` that kube itself drives (not one fed by a watch
//! per namespace), and a full buffer makes the watch wait for its slowest reader. Here a request
//! already waiting is not queued again: the queue holds at most one entry per object, the sender
//! never waits, and no request is lost, however far behind the reader is.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use kube::runtime::reflector::{Lookup, ObjectRef};

/// The requests waiting, oldest first, each once.
struct Queue<K: Lookup>
where
    K::DynamicType: Eq + Hash,
{
    order: VecDeque<ObjectRef<K>>,
    waiting: HashSet<ObjectRef<K>>,
    reader: Option<Waker>,
    /// Every sender is gone: the reader ends once the queue is empty.
    closed: bool,
}

type Shared<K> = Arc<Mutex<Queue<K>>>;

fn lock<K: Lookup>(shared: &Shared<K>) -> MutexGuard<'_, Queue<K>>
where
    K::DynamicType: Eq + Hash,
{
    // Nothing panics while holding the lock; a poisoned queue is still consistent.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new queue: its senders (cloned freely) and its one reader.
pub fn queue<K: Lookup>() -> (Sender<K>, Requests<K>)
where
    K::DynamicType: Eq + Hash,
{
    let shared = Arc::new(Mutex::new(Queue {
        order: VecDeque::new(),
        waiting: HashSet::new(),
        reader: None,
        closed: false,
    }));
    let sender = Sender {
        _alive: Arc::new(Alive(shared.clone())),
        shared: shared.clone(),
    };
    (sender, Requests { shared })
}

/// Closes the queue when the last sender goes.
struct Alive<K: Lookup>(Shared<K>)
where
    K::DynamicType: Eq + Hash;

impl<K: Lookup> Drop for Alive<K>
where
    K::DynamicType: Eq + Hash,
{
    fn drop(&mut self) {
        let reader = {
            let mut queue = lock(&self.0);
            queue.closed = true;
            queue.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// Queues reconcile requests; never waits.
pub struct Sender<K: Lookup>
where
    K::DynamicType: Eq + Hash,
{
    shared: Shared<K>,
    _alive: Arc<Alive<K>>,
}

impl<K: Lookup> Clone for Sender<K>
where
    K::DynamicType: Eq + Hash,
{
    fn clone(&self) -> Self {
        Sender {
            shared: self.shared.clone(),
            _alive: self._alive.clone(),
        }
    }
}

impl<K: Lookup> Sender<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Queues each request that is not waiting already, and wakes the reader if one was.
    pub fn send(&self, requests: impl IntoIterator<Item = ObjectRef<K>>) {
        let reader = {
            let mut queue = lock(&self.shared);
            let mut queued = false;
            for request in requests {
                if queue.waiting.insert(request.clone()) {
                    queue.order.push_back(request);
                    queued = true;
                }
            }
            if queued { queue.reader.take() } else { None }
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// The queue's requests, oldest first; ends when every sender is gone and the queue is empty.
pub struct Requests<K: Lookup>
where
    K::DynamicType: Eq + Hash,
{
    shared: Shared<K>,
}

impl<K: Lookup> Stream for Requests<K>
where
    K::DynamicType: Eq + Hash,
{
    type Item = ObjectRef<K>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = lock(&self.shared);
        if let Some(request) = queue.order.pop_front() {
            queue.waiting.remove(&request);
            return Poll::Ready(Some(request));
        }
        if queue.closed {
            return Poll::Ready(None);
        }
        queue.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn r(name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within("ns")
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(requests: &mut Requests<ConfigMap>, waker: &Waker) -> Poll<Option<String>> {
        Pin::new(requests)
            .poll_next(&mut Context::from_waker(waker))
            .map(|o| o.map(|r| r.name))
    }

    /// A reader far behind: the sender never waits, a request already waiting is not queued
    /// twice (however many times it comes), and none is lost.
    #[test]
    fn a_slow_reader_gets_every_request_once_and_the_sender_never_waits() {
        let (sender, mut requests) = queue::<ConfigMap>();
        for round in 0..10_000 {
            sender.send([r("a"), r(&format!("b{}", round % 3))]);
        }
        sender.send([r("c")]);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let got: Vec<_> = std::iter::from_fn(|| match poll(&mut requests, &waker) {
            Poll::Ready(Some(name)) => Some(name),
            _ => None,
        })
        .collect();
        assert_eq!(got, ["a", "b0", "b1", "b2", "c"]);
        // Read: the same request queues again, and wakes the waiting reader once.
        assert_eq!(poll(&mut requests, &waker), Poll::Pending);
        sender.send([r("a")]);
        sender.send([r("a")]);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut requests, &waker), Poll::Ready(Some("a".into())));
    }

    /// The reader ends only once every sender is gone and what they sent is read.
    #[test]
    fn the_reader_ends_after_the_last_sender_and_its_requests() {
        use futures::FutureExt;
        let (sender, mut requests) = queue::<ConfigMap>();
        let other = sender.clone();
        sender.send([r("a")]);
        drop(sender);
        let next = |requests: &mut Requests<ConfigMap>| {
            requests.next().now_or_never().map(|o| o.map(|r| r.name))
        };
        assert_eq!(next(&mut requests), Some(Some("a".into())));
        assert_eq!(next(&mut requests), None, "a sender is left: waiting");
        other.send([r("b")]);
        drop(other);
        assert_eq!(next(&mut requests), Some(Some("b".into())));
        assert_eq!(next(&mut requests), Some(None), "ended");
    }
}
