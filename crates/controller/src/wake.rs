//! Waiting on watch channels without spinning.

use tokio::sync::watch;

/// Resolves when `rx` sees a value it has not seen yet, and never once its
/// sender is gone: a closed channel has nothing more to say, and
/// `changed()` would return at once on every call, turning a loop that
/// waits on it into a busy loop.
pub async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_closed_channel_never_wakes_the_waiter() {
        let (tx, mut rx) = watch::channel(0);
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_millis(50), changed(&mut rx)).await;
        assert!(waited.is_err(), "a dropped sender must not wake the loop");
    }

    #[tokio::test]
    async fn a_new_value_wakes_the_waiter() {
        let (tx, mut rx) = watch::channel(0);
        tx.send(1).unwrap();
        tokio::time::timeout(Duration::from_secs(5), changed(&mut rx))
            .await
            .unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
