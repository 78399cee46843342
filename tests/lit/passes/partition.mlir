// RUN: neuron-opt %s --split-input-file -p 'partition{target=inf1}' | filecheck %s
// RUN: neuron-opt %s --split-input-file -p 'partition{target=inf1 min-subgraph-size=2}' | filecheck %s --check-prefix=MIN

// A diamond through an unsupported op: Relu and Add cannot share a subgraph (the
// path Relu -> custom -> Add would leave it and come back), so they get one each.
func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = "onnx.Relu"(%x) {onnx.name = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  %b = "onnx.custom"(%a) <{domain = "com.example", op_type = "Mystery", attrs = {}}> {onnx.name = "mystery"} : (tensor<2xf32>) -> tensor<2xf32>
  %c = "onnx.Add"(%a, %b) {onnx.name = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  func.return %c : tensor<2xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
// CHECK-NEXT:    %a = func.call @neuron_subgraph_0(%x) : (tensor<2xf32>) -> tensor<2xf32>
// CHECK-NEXT:    %b = "onnx.custom"(%a) {{.*}}neuron.cpu_reason = "{{.*}}com.example{{.*}}"
// CHECK-NEXT:    %c = func.call @neuron_subgraph_1(%a, %b)
// CHECK-NEXT:    func.return %c
// CHECK:       func.func private @neuron_subgraph_0(%x: tensor<2xf32>) -> tensor<2xf32> attributes {neuron.target = "inf1"} {
// CHECK-NEXT:    %a = "onnx.Relu"(%x)
// CHECK-NEXT:    func.return %a
// CHECK:       func.func private @neuron_subgraph_1(%a: tensor<2xf32>, %b: tensor<2xf32>) -> tensor<2xf32> attributes {neuron.target = "inf1"} {
// CHECK-NEXT:    %c = "onnx.Add"(%a, %b)

// With a minimum of 2 ops, both islands stay on the CPU, with the reason.
// MIN-LABEL: func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
// MIN-NOT:   func.call
// MIN:       "onnx.Relu"{{.*}}neuron.cpu_reason = "in a cluster of 1 op(s), below min-subgraph-size=2"
// MIN-NOT:   func.call
// MIN:       func.return %c

// -----

// Independent supported branches merge into one subgraph; the constant it reads
// is copied in (weights live with the NeuronCore program).
func.func @main(%x: tensor<2xf32>, %y: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
  %w = "onnx.Constant"() <{value = dense<[1.0, 2.0]> : tensor<2xf32>}> : () -> tensor<2xf32>
  %a = "onnx.Mul"(%x, %w) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %b = "onnx.custom"(%y) <{domain = "com.example", op_type = "Mystery", attrs = {}}> : (tensor<2xf32>) -> tensor<2xf32>
  %c = "onnx.Neg"(%x) : (tensor<2xf32>) -> tensor<2xf32>
  func.return %a, %c : tensor<2xf32>, tensor<2xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:       func.call @neuron_subgraph_0(%x) : (tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>)
// CHECK-NOT:   onnx.Constant
// CHECK:       func.func private @neuron_subgraph_0
// CHECK-NEXT:    %w = "onnx.Constant"()
// CHECK-NEXT:    "onnx.Mul"
// CHECK-NEXT:    "onnx.Neg"

// -----

// Ops inside a CPU control-flow region are partitioned inside it.
func.func @main(%x: tensor<2xf32>, %c: tensor<i1>) -> tensor<2xf32> {
  %0 = tensor.extract %c[] : tensor<i1>
  %y = scf.if %0 -> (tensor<2xf32>) {
    %t = "onnx.Neg"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    %u = "onnx.Relu"(%t) : (tensor<2xf32>) -> tensor<2xf32>
    scf.yield %u : tensor<2xf32>
  } else {
    scf.yield %x : tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:       scf.if
// CHECK-NEXT:    func.call @neuron_subgraph_{{[0-9]+}}(%x)
// CHECK-NEXT:    scf.yield
