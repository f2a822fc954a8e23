"""Reading a SQL server's health: a bounded engine and one module of queries per dialect."""
