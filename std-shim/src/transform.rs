//! The user's reply function behind a box, for both the TCP and the UDP loops.

use upcase_core::{Progress, Transform};

/// A boxed user transform, as the core's [`Transform`] (the core has no `alloc` to do this).
pub(crate) struct DynTransform(Box<dyn Transform + Send>);

impl DynTransform {
    /// Makes a transform with the server's factory.
    pub(crate) fn new(factory: &crate::TransformFactory) -> Self {
        Self(factory())
    }

    /// A transform that is never run (a refused connection's): boxing a zero-sized type
    /// allocates nothing.
    pub(crate) fn unused() -> Self {
        Self(Box::new(upcase_core::ByteMap(|b: u8| b)))
    }
}

impl Transform for DynTransform {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> Progress {
        self.0.process(input, output)
    }
    fn finish(&mut self, output: &mut [u8]) -> usize {
        self.0.finish(output)
    }
}
