// RUN: not neuron-opt %s --split-input-file -p 'rebatch{batch=4}' 2>&1 | filecheck %s

// A reduction over the batch axis mixes samples: the node is named.
func.func @main(%x: tensor<1x4xf32> {onnx.name = "x"}) -> (tensor<1x1xf32> {onnx.name = "y"}) {
  %y = "onnx.ReduceMean"(%x) {onnx.name = "mean_all"} : (tensor<1x4xf32>) -> tensor<1x1xf32>
  func.return %y : tensor<1x1xf32>
}
// CHECK: error: {{.*}}rebatch: node 'mean_all' (ReduceMean) reduces over the batch axis 0; the model cannot be rebatched

// -----

// The rules accept a broadcast against a constant of the batch-1 row count, but the
// batch-4 program cannot run it: the proof names the node.
func.func @main(%x: tensor<1x2x3xf32> {onnx.name = "x"}) -> (tensor<2x3xf32> {onnx.name = "y"}) {
  %shape = "onnx.Constant"() <{value = dense<[2, 3]> : tensor<2xi64>}> : () -> tensor<2xi64>
  %rows = "onnx.Reshape"(%x, %shape) {onnx.name = "rows"} : (tensor<1x2x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
  %pos = "onnx.Constant"() <{value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]> : tensor<2x3xf32>}> : () -> tensor<2x3xf32>
  %y = "onnx.Add"(%rows, %pos) {onnx.name = "add_positions"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: error: {{.*}}rebatch: the batch-4 program is not 4 batch-1 runs stacked (the batched program fails to run; first difference at node 'add_positions' (Add), which fails: ValueError: operands could not be broadcast together with shapes (8,3) (2,3) {{.*}}); the model cannot be rebatched

// -----

// No batch symbol, no unnamed leading dim, no static leading 1.
func.func @main(%x: tensor<2x4xf32> {onnx.name = "x"}) -> (tensor<2x4xf32> {onnx.name = "y"}) {
  %y = "onnx.Relu"(%x) : (tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}
// CHECK: error: {{.*}}cannot find the batch axis: no input has a batch symbol (batch, batch_size, N, ...), an unnamed leading dim or a static leading dim of 1 (inputs: x[2,4]); name it with batch_dim=
