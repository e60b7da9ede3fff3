# Shared by the compile probes in this folder (compile_probe_ninth.py, compile_pass_profile.py,
# trace_lower_probe.py): the optimizer step of a benchmarks/first_step.py model as the
# functional step that Keras's JAX trainer compiles, jax.jit(opt.stateless_apply) with the state
# donated, and its arguments (zero gradients). CODE picks the keras_sing checkout.
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "benchmarks"))
sys.path.insert(0, os.environ.get("CODE", os.path.join(here, "..", "..", "..")))
import warnings; warnings.filterwarnings("ignore")

def optimizer_step(model_name, optimizer_name, kw):
    """(new_jit, args): new_jit() is a fresh jax.jit of the step (so nothing is cached from an
    earlier compile), args its (trainable values, optimizer values, gradients)."""
    import jax, keras, first_step, keras_sing
    tv = first_step.build_model(model_name).trainable_variables
    host = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
    opt = host if optimizer_name == "adamw" else keras_sing.SING(host, **kw)
    opt.build(tv)
    args = ([v.value for v in tv], [v.value for v in opt.variables], [keras.ops.zeros(v.shape) for v in tv])
    new_jit = lambda: jax.jit(lambda t, o, g: opt.stateless_apply(o, g, t), donate_argnums=(0, 1))
    return new_jit, args
