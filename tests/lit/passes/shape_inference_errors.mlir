// Unpinned dynamic input dims are an error naming the input, dim, symbol and option.
// RUN: not neuron-opt %s -p shape-inference 2>&1 | filecheck %s --check-prefix=UNPINNED
// UNPINNED: error: {{.*}}: input 'input_ids' dim 0 ('batch') is dynamic; the NeuronCore needs static shapes: pin it with dims="batch:N" or input-shapes="input_ids:..."

// RUN: not neuron-opt %s -p 'shape-inference{dims="batch:2"}' 2>&1 | filecheck %s --check-prefix=SEQ
// SEQ: error: {{.*}}: input 'input_ids' dim 1 ('sequence') is dynamic

// RUN: not neuron-opt %s -p 'shape-inference{input-shapes="input_ids:2x8x1"}' 2>&1 | filecheck %s --check-prefix=RANK
// RANK: error: {{.*}}: input-shapes gives 'input_ids' rank 3, but the input has rank 2

// RUN: not neuron-opt %s -p 'shape-inference{input-shapes="nope:2x8"}' 2>&1 | filecheck %s --check-prefix=NAME
// NAME: error: {{.*}}: input-shapes names 'nope', which is not a graph input (inputs: input_ids)

// RUN: not neuron-opt %s -p 'shape-inference{dims="batch:two"}' 2>&1 | filecheck %s --check-prefix=SYNTAX
// SYNTAX: error: {{.*}}: dims entry 'batch:two': size must be an integer

// Pinned by symbol or by whole shape, the function signature becomes static.
// RUN: neuron-opt %s -p 'shape-inference{dims="batch:2,sequence:8"}' | filecheck %s
// RUN: neuron-opt %s -p 'shape-inference{input-shapes="input_ids:2x8"}' | filecheck %s
// CHECK: func.func @main(%input_ids: tensor<2x8xi64> {{.*}}) -> (tensor<2x8xi64> {{.*}})

func.func @main(%input_ids: tensor<?x?xi64> {onnx.name = "input_ids", onnx.dim_params = ["batch", "sequence"]}) -> (tensor<?x?xi64> {onnx.name = "y"}) {
  %y = "onnx.Identity"(%input_ids) : (tensor<?x?xi64>) -> tensor<?x?xi64>
  func.return %y : tensor<?x?xi64>
}
