// RUN: not neuron-opt %s -p lower-to-nc 2>&1 | filecheck %s

// lower-to-nc refuses what the legality table refuses, with the table's reason.
func.func private @refused(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>) -> tensor<2x4xf32> attributes {neuron.target = "inf1"} {
  %y = "onnx.Einsum"(%a, %b) <{equation = "ij,jk->ik"}> {onnx.name = "mix"} : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}
// CHECK: error: {{.*}}lower-to-nc: cannot lower 'onnx.Einsum' (node 'mix'): Einsum: lower-to-nc has no lowering for it
