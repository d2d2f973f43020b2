"""Connections: the table, Zeek's TCP/UDP/ICMP state and history logic, conn.log's record, UIDs."""

from analysis.conn.record import ConnInfo, conn_record_type
from analysis.conn.state import Connection, Endpoint
from analysis.conn.table import ConnTable
from analysis.conn.uid import UidGenerator

__all__ = ["ConnInfo", "ConnTable", "Connection", "Endpoint", "UidGenerator", "conn_record_type"]
