"""grukern: fast, readable GRU forward and backpropagation-through-time kernels.

    params = grukern.init_params(input_size=16, hidden_size=32, seed=0)
    y, h_n = grukern.forward(x, params)                    # x: (T, B, I)
    y, h_n, tape = grukern.forward_train(x, params)
    grads = grukern.backward(tape, dy=dy)                 # grads.x, grads.h0, grads.params

Importing grukern compiles nothing and needs no GPU. It loads TBB's library where the pip
package put it, so that Numba's parallel kernels run on its fork- and thread-safe layer.
"""

from grukern import _threads
from grukern._backends import BackendUnavailableError, backends, cuda_algorithm
from grukern._memory import buffer_cache_bytes, buffer_cache_limit, set_buffer_cache_limit
from grukern.api import backward, forward, forward_train
from grukern.cell import GRUCell
from grukern.layer import GRU, LayerGradients, LayerTape
from grukern.params import GRUParams, init_params
from grukern.tape import Gradients, Tape

_threads.load_tbb()  # before Numba starts its threads (grukern._threads says why)

get_num_threads = _threads.get_num_threads
set_num_threads = _threads.set_num_threads

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "BackendUnavailableError",
    "GRUCell",
    "GRUParams",
    "Gradients",
    "LayerGradients",
    "LayerTape",
    "Tape",
    "__version__",
    "backends",
    "backward",
    "buffer_cache_bytes",
    "buffer_cache_limit",
    "cuda_algorithm",
    "forward",
    "forward_train",
    "get_num_threads",
    "init_params",
    "set_buffer_cache_limit",
    "set_num_threads",
]
