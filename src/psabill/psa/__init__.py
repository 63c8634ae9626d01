"""PSA clients (ConnectWise PSA, Datto Autotask) behind one small interface."""
