"""nonstop.notify: webhooks on rollout transitions (docs/notifications.md)."""
