"""lookout on Apache Spark Structured Streaming: the same rules, the same results (issue 5).

parse.py (the record contract as a Spark plan), compile.py (a RuleSet as one aggregation),
format.py (the output JSON), app.py (files and Kafka modes), kafka.py (a Kafka source and sink
on PySpark's Python Data Source API, for when Spark's own connector is not on the classpath).
Importing this package does not import pyspark; the modules do.
"""
