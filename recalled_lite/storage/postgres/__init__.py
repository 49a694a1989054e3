"""The PostgreSQL backend: the same Store contract as storage/sqlite, for several instances
on one database (docs/scaling.md). Only this package and storage/sqlite import a driver."""
