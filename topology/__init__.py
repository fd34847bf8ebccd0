"""The unified data model of the cluster: entities and relations on a networkx graph."""
