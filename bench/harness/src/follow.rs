//! Follows the objects of one kind on one member, as a client-go informer does: a list, then a watch
//! from the list's resourceVersion. When the watch ends (a member drops a watcher that falls too far
//! behind) it watches again from the last revision it saw, and lists again when it cannot; so every
//! change is seen, a few perhaps twice (a caller counts each object's first sighting).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{object_event, ListObjectsRequest, ObjectEvent, WatchObjectsRequest};
use tonic::transport::Channel;

use crate::access::SkiffAccess;

/// What a list response or a watch event says of one object (its JSON).
pub enum Seen<'a> {
    /// In a list: the object as it is now.
    Listed(&'a [u8]),
    Added(&'a [u8]),
    Modified(&'a [u8]),
    /// The object is gone.
    Deleted,
}

/// A list of 30,000 pods is tens of megabytes; the member answers up to 256 MiB.
const MAX_MESSAGE: usize = 256 << 20;
/// How long to wait before asking again when the member does not answer.
const RETRY: Duration = Duration::from_millis(100);

/// A running follower; it stops when dropped.
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
    /// Times the watch ended and was started again (or the kind was listed again).
    restarts: Arc<AtomicU64>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// How often the watch had to be started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

fn client(channel: Channel) -> ResourcesClient<Channel> {
    ResourcesClient::new(channel).max_decoding_message_size(MAX_MESSAGE)
}

fn watch_request(kind: &str, resource_version: u64) -> WatchObjectsRequest {
    WatchObjectsRequest { kind: kind.into(), all_namespaces: true, resource_version, ..Default::default() }
}

/// Lists `kind` on `endpoint`, tells `on` of every object, and returns the list's revision.
async fn list(channel: Channel, kind: &str, on: &mut (impl FnMut(Seen) + Send)) -> Result<u64, tonic::Status> {
    let req = ListObjectsRequest { kind: kind.into(), all_namespaces: true, stale: true, ..Default::default() };
    let list = client(channel).list(req).await?.into_inner();
    for object in &list.objects {
        on(Seen::Listed(object));
    }
    Ok(list.resource_version)
}

fn tell(event: &ObjectEvent, on: &mut impl FnMut(Seen)) {
    use object_event::Type;
    match Type::try_from(event.r#type) {
        Ok(Type::Added) => on(Seen::Added(&event.object)),
        Ok(Type::Modified) => on(Seen::Modified(&event.object)),
        Ok(Type::Deleted) => on(Seen::Deleted),
        Ok(Type::Bookmark) | Err(_) => {}
    }
}

/// Starts following `kind` on `endpoint`: returns once the first list has been told to `on` and the
/// watch after it is registered on the member, so every later change reaches `on`.
pub async fn start(
    access: &SkiffAccess,
    endpoint: &str,
    kind: &'static str,
    mut on: impl FnMut(Seen) + Send + 'static,
) -> anyhow::Result<Follower> {
    let channel = access.connect(endpoint).await?;
    let mut revision = list(channel.clone(), kind, &mut on)
        .await
        .map_err(|e| anyhow::anyhow!("listing {kind} on {endpoint}: {}", e.message()))?;
    let first = client(channel.clone())
        .watch(watch_request(kind, revision))
        .await
        .map_err(|e| anyhow::anyhow!("watching {kind} on {endpoint}: {}", e.message()))?
        .into_inner();
    let restarts = Arc::new(AtomicU64::new(0));
    let counted = restarts.clone();
    let task = tokio::spawn(async move {
        let mut stream = first;
        loop {
            while let Ok(Some(event)) = stream.message().await {
                revision = revision.max(event.resource_version);
                tell(&event, &mut on);
            }
            // The watch ended: from where it stopped, else from a new list.
            counted.fetch_add(1, Ordering::Relaxed);
            stream = loop {
                match client(channel.clone()).watch(watch_request(kind, revision)).await {
                    Ok(s) => break s.into_inner(),
                    Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        if let Ok(listed) = list(channel.clone(), kind, &mut on).await {
                            revision = listed;
                        }
                    }
                }
            };
        }
    });
    Ok(Follower { task, restarts })
}
