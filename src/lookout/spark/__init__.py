"""lookout on Apache Spark Structured Streaming: the same rules, the same results (issues 5, 13, 19).

compile.py (the plan: parse, watermark, rows per rule, state), arrow_parse.py (the record
contract: lookout's own parser on Arrow batches), panes.py (the embedded engine's panes as the
stateful operator), format.py (the output messages), flush.py (rows that only move the
watermark), app.py (files and Kafka modes), kafka.py (a Kafka source and sink on PySpark's
Python Data Source API, with heartbeats, for when Spark's own connector is not on the classpath).
Importing this package does not import pyspark; the modules do.
"""
