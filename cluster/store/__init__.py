"""The cluster's partitioned key-value store (Zeek's proxy-held state, with hand-off)."""

from cluster.store.client import LocalStore, StoreClient, StoreTimeout, StoreUnavailable
from cluster.store.core import KeyStore, StoreError
from cluster.store.server import StoreServer, store_topic

__all__ = ["KeyStore", "LocalStore", "StoreClient", "StoreError", "StoreServer", "StoreTimeout",
           "StoreUnavailable", "store_topic"]
