"""Partitions: how assets are split into slices, how partitions are encoded, and mappings.

Pure Python (no Django): definitions (static, time windows, multi-dimensional, dynamic), the
partition key codec (``encode_partition_key`` / ``decode_partition_key``, whose format is
documented in ``flowstone.partitions.codec``) and the mappings between upstream and downstream
partitions.
"""

from __future__ import annotations

from flowstone.partitions.base import DynamicKeyStore, MemoryDynamicKeyStore, PartitionsDefinition
from flowstone.partitions.codec import (
    MAX_PARTITION_KEY_LENGTH,
    UNPARTITIONED_KEY,
    PartitionValue,
    decode_partition_key,
    encode_partition_key,
)
from flowstone.partitions.dynamic import DynamicPartitions
from flowstone.partitions.mapping import (
    AllPartitionsMapping,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    PartitionMapping,
    TimeWindowPartitionMapping,
    check_mapping,
    requires_explicit_mapping,
)
from flowstone.partitions.multi import MultiPartitions
from flowstone.partitions.static import StaticPartitions
from flowstone.partitions.time_window import (
    Cadence,
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
)

__all__ = [
    "MAX_PARTITION_KEY_LENGTH",
    "UNPARTITIONED_KEY",
    "AllPartitionsMapping",
    "Cadence",
    "DailyPartitions",
    "DimensionPartitionMapping",
    "DynamicKeyStore",
    "DynamicPartitions",
    "HourlyPartitions",
    "IdentityPartitionMapping",
    "MemoryDynamicKeyStore",
    "MonthlyPartitions",
    "MultiPartitions",
    "PartitionMapping",
    "PartitionValue",
    "PartitionsDefinition",
    "StaticPartitions",
    "TimeWindowPartitionMapping",
    "TimeWindowPartitions",
    "WeeklyPartitions",
    "check_mapping",
    "decode_partition_key",
    "encode_partition_key",
    "requires_explicit_mapping",
]
