"""Durable key storage for a site's KME: SQLite, transactional, exactly-once delivery."""

from .store import KeyStore, KeysNotFound, NotARecipient, NotEnoughKeys, StoredKey, cut_key, store_final_key

__all__ = ["KeyStore", "KeysNotFound", "NotARecipient", "NotEnoughKeys", "StoredKey", "cut_key", "store_final_key"]
