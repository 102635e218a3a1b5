"""The SparkSession lookout runs on: UTC, quiet, and Python workers that can connect back."""

from __future__ import annotations

import os
import sys
import warnings

DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",  # window bounds and JSON timestamps are UTC
    "spark.sql.shuffle.partitions": "4",  # state store partitions: 200 is far too many for one host
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
    # Arrow batches to the Python stages (parse, panes): larger batches, less per-batch overhead
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
    # ...bounded by rows only: with a byte limit, the stateful operator's Arrow writer sums every
    # vector's size after each row (BaseStreamingArrowWriter: ~6% of the JVM's samples), and
    # skips that only when the limit is exactly Int.MaxValue
    "spark.sql.execution.arrow.maxBytesPerBatch": str(2**31 - 1),
    # State is a few rows per bucket (Arrow IPC panes); RocksDB keeps them off the JVM heap.
    "spark.sql.streaming.stateStore.providerClass": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "spark.driver.memory": "2g",  # local mode: the driver is the executor
}


def build_session(master: str | None, conf: dict[str, str] | None = None, app_name: str = "lookout"):  # noqa: ANN201
    """A SparkSession with lookout's defaults, overridden by `conf` (the user's --conf)."""
    # Workers must run this interpreter (the venv's), or they "fail to connect back".
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", message=".*[Pp]andas.*")  # pyspark warns about pandas versions
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(app_name)
    if master:
        b = b.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ and "spark.master" not in (conf or {}):
        # Under spark-submit (which sets PYSPARK_GATEWAY_PORT) the master comes from its command line.
        b = b.master("local[*]")
    for k, v in {**DEFAULT_CONF, **(conf or {})}.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("LOOKOUT_SPARK_LOG_LEVEL", "ERROR"))
    return spark
