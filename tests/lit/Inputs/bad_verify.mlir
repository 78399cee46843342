builtin.module {
  %0 = "onnx.Relu"() : () -> tensor<f32>
}
