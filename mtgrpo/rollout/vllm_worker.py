"""A vLLM worker extension (runs inside the vLLM server's worker processes).

``VLLMServer`` starts vLLM with ``--worker-extension-cls
mtgrpo.rollout.vllm_worker.WeightReloadExtension``, which adds one method to every worker,
called by ``ReloadWeightSync`` through ``POST /collective_rpc``.

Why it exists: vLLM's in-place ``reload_weights`` on CPU leaves a model with tied input and
output embeddings (``tie_word_embeddings``: Qwen2.5 0.5B-3B, Qwen3 up to 4B, the tiny test
model) half updated. The CPU backend computes the logits through a GEMM handle that the LM
head prepared from its weight once, at load time (``dispatch_cpu_unquantized_gemm``). The
checkpoint has no ``lm_head.weight`` for a tied model, so the reload never re-processes the LM
head: the new embedding reaches the input, the old one stays in the output, and rollouts are
silently off-policy (measured: logprobs 2.0 nats off after one perturbed-embedding push). The
extension reloads as usual and then re-prepares the LM head from its (already updated) weight.
"""

from __future__ import annotations


class WeightReloadExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker."""

    def mtgrpo_reload_weights(self, weights_path: str) -> dict:
        self.reload_weights(weights_path=weights_path)
        return {"reprepared_lm_heads": reprepare_lm_heads(self.model_runner.get_model())}


def reprepare_lm_heads(model) -> int:
    """Re-run the weight post-processing of every embedding and LM head that holds a CPU GEMM
    handle (only the CPU backend makes them; elsewhere this does nothing)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    count = 0
    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)
            count += 1
    return count
