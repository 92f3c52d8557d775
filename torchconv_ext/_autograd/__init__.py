"""``torch.autograd.Function``s: the differentiable entry points over the registered ops."""
