"""The worker side: what a job is, where it runs and what it runs.

``dispatcher`` (the persistent queue's owner in the node), ``executors`` (local process pool or Dask), ``remote``
(the Dask worker's wrapper), ``workerproc`` (job-process tuning), ``chain`` (the analysis chain of one series),
``radiomics`` (the radiomics job), ``batch`` (many series offline). Import the module you need; nothing is
re-exported here, so importing one does not import the others.
"""
