"""How Spark jobs run anywhere: several jobs in one session (`steps`), Spark 3.5/4.x shims
(`compat`), the Synapse batch entry point (`synapse_entry`) and the code package it runs
(`packaging`). No Dagster imports: this runs on the pool."""
