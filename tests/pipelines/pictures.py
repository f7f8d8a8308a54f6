"""An asset for the admin's pictures: a daily asset of 100,000 partitions.

``p_daily``'s partitions run from 1800-01-01 for 100,000 days; the tests write its steps with
one ``INSERT ... SELECT`` rather than running it.
"""

from __future__ import annotations

import datetime as dt

from flowstone import AssetContext, asset
from flowstone.partitions import TimeWindowPartitions

DAYS = 100_000
FIRST_DAY = dt.date(1800, 1, 1)
DAILY = TimeWindowPartitions(
    cadence="daily", start=FIRST_DAY, end=FIRST_DAY + dt.timedelta(days=DAYS)
)


@asset(partitions=DAILY)
def p_daily(context: AssetContext) -> str:
    return str(context.partition)
