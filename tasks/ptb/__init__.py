"""Penn Treebank language modelling with the STN paper's seven regularisation hyperparameters (see ``task``)."""
