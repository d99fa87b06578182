"""I/O edges shared by the roles: the MQTT connection, key and state files, timers,
processes and PTYs. The sans-IO core (the `tether` package proper) never imports these."""
