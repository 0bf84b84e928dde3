//! The dependency graph of a compose project: services, networks and volumes as a petgraph DAG.
