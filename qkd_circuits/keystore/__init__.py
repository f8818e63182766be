"""Durable key storage for a site's KME: SQLite, transactional, exactly-once delivery."""

from .store import (AlreadyDelivered, KeyStore, KeysNotFound, NotARecipient, NotEnoughKeys, ReservationCancelled,
                    StoredKey, StoreFull, StoreUnavailable, cut_key, store_final_key)

__all__ = ["AlreadyDelivered", "KeyStore", "KeysNotFound", "NotARecipient", "NotEnoughKeys", "ReservationCancelled",
           "StoredKey", "StoreFull", "StoreUnavailable", "cut_key", "store_final_key"]
