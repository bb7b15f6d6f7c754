"""The live service registry: what runs in every cluster of the mesh (Services, EndpointSlices,
Pods, Nodes), read from each cluster's API server (kube.py) or a ``dir:`` folder of manifests
(directory.py) into one store (store.py) that the daemon merges with the served revision."""
