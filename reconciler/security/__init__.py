"""Who may talk to the daemon, as istiod decides it: TLS for ADS and the status API (tls.py), the
identity of a peer from its mTLS certificate or a Kubernetes service-account token checked with
TokenReview (identity.py, tokens.py), and what that identity may ask for (gate.py)."""
