"""The deployments view inside the Airflow UI: the plugin's FastAPI app (:mod:`.app`), its
pages and actions, and what it reads from Airflow's metadata database (:mod:`.runs`)."""
