"""The clients at the bottom of the provider stack: one per API family, each a plain async
:class:`~synth.providers.base.Provider` (one request, one key, one answer or a ProviderError).
SDKs are imported only by the client that uses them."""
