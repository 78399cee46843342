// --split-input-file processes chunks independently; --elide-constants hides big
// constants; generic printing is available.
// RUN: neuron-opt %s --split-input-file | filecheck %s
// RUN: neuron-opt %s --split-input-file --elide-constants=8 | filecheck %s --check-prefix=ELIDE
// RUN: neuron-opt %s --split-input-file --print-op-generic | filecheck %s --check-prefix=GENERIC

func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c = "onnx.Constant"() <{value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>}> : () -> tensor<4xf32>
  %y = "onnx.Add"(%x, %c) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>
// ELIDE: dense_resource<__elided__> : tensor<4xf32>
// GENERIC: "func.func"() <{sym_name = "main"

// -----

func.func @main(%x: tensor<2xi64>) -> tensor<2xi64> {
  %y = "onnx.Neg"(%x) : (tensor<2xi64>) -> tensor<2xi64>
  func.return %y : tensor<2xi64>
}
// CHECK: {{^}}// {{-----}}
// CHECK: "onnx.Neg"(%x) : (tensor<2xi64>) -> tensor<2xi64>
