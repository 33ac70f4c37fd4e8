"""Clients for the Azure services the pipeline talks to, one module each:

- `arm`: Azure Resource Manager REST calls (token for the endpoint's audience, retries that
  honour Retry-After, request counting, nextLink paging, ARM's error answers); the Sentinel
  watchlist and incidents (`pipeline.publish`) go through it;
- `livy`: the Livy batches API of a Synapse Spark pool and the staging storage its batches read
  the code from (the Dagster resource is `pipeline.resources.synapse`);
- `log_analytics`: queries of a Log Analytics workspace, sliced within the service limits;
- `credentials`: the one Azure identity they use and `AzureAccessError`;
- `log`: the `Log` protocol they report progress to;
- `storage`: local folders and abfss:// / az:// URLs as filesystems with their credentials and
  environment variables (`AZURE_STORAGE_CONNECTION_STRING` …), for the export and the lake.
"""
