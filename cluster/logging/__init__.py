"""The cluster logging framework: workers batch log records onto the reliable channel
(:mod:`cluster.logging.shipper`), loggers write one unified file per stream with rotation
(:mod:`cluster.logging.service`); :mod:`cluster.logging.codec` is the batch format between them.
"""
