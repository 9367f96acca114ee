"""The provider layer's policies: each one an :class:`~synth.providers.policies.base.Layer` that
wraps the next, composed by :func:`synth.providers.stack.build_stack`."""
